"""Command line: ``lora-theory {simulate, slopes, figures, validate, calibrate, derive, transfer, explain,
bench}``.

Options of the config dataclasses are generated from their fields and ``metadata["help"]``; the
sweepable arguments of :func:`lora_theory.simulate` take one or more values. This module holds
no logic beyond parsing and calling the library.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import typing
from dataclasses import MISSING, fields
from pathlib import Path

from . import commands
from .commands import SWEEP
from .config import ModelConfig, TrainConfig
from .inits import INITS
from .optim import OPTIMIZERS


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lora-theory`` and ``python -m lora_theory``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except ValueError as err:  # bad input: one clear line, not a traceback
        parser.exit(2, f"lora-theory {args.command}: error: {err}\n")


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import version

    parser = argparse.ArgumentParser(prog="lora-theory", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"lora-theory {version('lora_theory')}")
    sub = parser.add_subparsers(dest="command")
    sim = sub.add_parser("simulate", help="train a grid of LoRA configurations, write a tidy CSV/Parquet",
                         description="Train widths × ranks × inits × optimisers × learning rates × seeds "
                         "(every list is swept) and write one row per configuration and recorded step.")
    defaults = _simulate_defaults()
    choices = {"inits": sorted(INITS), "optimizers": sorted(OPTIMIZERS)}
    for name, (typ, text) in SWEEP.items():
        sim.add_argument(f"--{name.replace('_', '-')}", type=typ, nargs="+", default=None, metavar="V",
                         choices=choices.get(name), help=text + (", among: %(choices)s" if name in choices
                                                                 else "") + f" (default: {defaults[name]})")
    sim.add_argument("--absolute-lr", action="store_true", help="treat --lrs as absolute learning rates")
    _add_dataclass_options(sim, ModelConfig)
    _add_dataclass_options(sim, TrainConfig)
    sim.add_argument("--out", type=_path, default=Path("simulate.csv"), help="output .csv or .parquet file, "
                     "checked before the sweep starts (default: simulate.csv)")
    sim.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_run_options(sim)
    sim.set_defaults(run=commands.run_simulate)
    ben = sub.add_parser("bench", help="time the batched engine against a per-configuration torch loop")
    ben.add_argument("--quick", action="store_true", help="small cases (seconds)")
    ben.add_argument("--json", action="store_true", help="print one JSON object")
    ben.add_argument("--threads", type=int, default=None, help="torch threads, >= 1 (default: torch's)")
    ben.set_defaults(run=commands.run_bench)
    slo = sub.add_parser("slopes", help="the first scaling check: measured width exponents vs the γ-calculus")
    slo.add_argument("--widths", type=int, nargs="+", default=[2 ** k for k in range(7, 13)], metavar="N",
                     help="at least two widths (default: 128 256 512 1024 2048 4096)")
    slo.add_argument("--seeds", type=int, nargs="+", default=list(range(6)), metavar="S",
                     help="at least two seeds, for the intervals (default: 0 1 2 3 4 5)")
    slo.add_argument("--steps", type=int, default=4, help="Adam steps, >= 2 (layer setting, one sample; "
                     "default: 4)")
    slo.add_argument("--per-step", action="store_true", help="one fit per step, not the steps ≥ 2 window")
    slo.set_defaults(run=commands.run_slopes)
    fig = sub.add_parser("figures", help="rebuild the reproduction's figures (PNG + PDF + summary.json)")
    fig.add_argument("--quick", action="store_true", help="small widths and few steps (seconds)")
    fig.add_argument("--only", nargs="+", default=None, metavar="NAME", choices=_Lazy("figures", "FIGURES"),
                     help="figures to build, among: %(choices)s (default: all)")
    fig.add_argument("--out", type=_path, default=Path("figures"), help="output directory (default: figures)")
    fig.add_argument("--cache-dir", type=_path, default=Path(".lora_theory_cache"), help="where finished "
                     "sweep units are kept; reruns load them (default: .lora_theory_cache)")
    fig.add_argument("--workers", type=int, default=1,
                     help="processes for the sweeps, one torch thread each (default 1)")
    fig.set_defaults(run=commands.run_figures)
    val = sub.add_parser("validate", help="theory-vs-measurement matrix: inits × optimisers × c (resumable)",
                         description="Measure every statistic's width exponent in every cell of the matrix "
                         "and compare it with the γ-calculus; write results/validation.")
    val.add_argument("--quick", action="store_true", help="a few inits, small widths (seconds)")
    val.add_argument("--out", type=_path, default=Path("results/validation"),
                     help="output folder (default: results/validation)")
    val.add_argument("--cache-dir", type=_path, default=Path(".lora_theory_cache"),
                     help="where finished sweep units are kept (default: .lora_theory_cache)")
    val.set_defaults(run=commands.run_validate)
    cal = sub.add_parser("calibrate", help="coverage study of fit_exponent's intervals (resumable)",
                         description="Run (or resume) the coverage study: many seeds per case, cut into "
                         "groups of 2, 3 and 6; coverage of each interval method against the large-seed "
                         "slope.")
    cal.add_argument("--quick", action="store_true", help="a tenth of the seeds (about a minute)")
    cal.add_argument("--out", type=_path, default=Path("results/calibration"),
                     help="output folder (default: results/calibration)")
    cal.add_argument("--cache-dir", type=_path, default=Path(".lora_theory_cache"),
                     help="where finished sweep units are kept (default: .lora_theory_cache)")
    cal.add_argument("--cases", nargs="+", default=None, metavar="NAME", help="cases to run, among: "
                     "%(choices)s (default: all)", choices=_Lazy("calibrate", "CASES", "name"))
    cal.set_defaults(run=commands.run_calibrate)
    der = sub.add_parser("derive", help="print the γ-exponent derivation of each initialisation")
    der.add_argument("--inits", nargs="+", default=["A", "B"], choices=sorted(INITS), metavar="INIT",
                     help="initialisations to derive, among: %(choices)s (default: A B)")
    der.add_argument("--lr-exponent", type=float, nargs="+", default=None,
                     help="c (shared) or c_A c_B; default: the maximal stable c of each init")
    der.add_argument("--optimizer", default="adam", choices=_Lazy("theory.recursion", "OPTIMISERS"),
                     metavar="NAME", help="update rule of the recursion, among: %(choices)s (default: adam)")
    der.add_argument("--steps", type=int, default=4, help="number of steps to derive, >= 1 (default: 4)")
    der.add_argument("--latex", action="store_true", help="emit LaTeX instead of markdown")
    der.add_argument("--rank-exponent", type=float, default=0.0, help="ρ in r = n^ρ, in [0, 1) (default: 0)")
    der.add_argument("--scaling", default="lora", help=_SCALING_HELP)
    der.set_defaults(run=commands.run_derive)
    tra = sub.add_parser("transfer", help="predict η at another width/rank/α from a tuned one, and say why "
                         "(docs/theory.md §13)")
    tra.add_argument("--lr", type=float, required=True, help="the learning rate tuned at --from")
    tra.add_argument("--from", dest="source", required=True, metavar="SHAPE", help="width=N,rank=R[,alpha=A]")
    tra.add_argument("--to", dest="target", required=True, metavar="SHAPE", help="width=N,rank=R[,alpha=A]")
    tra.add_argument("--init", default="A", choices=sorted(INITS), metavar="INIT", help="among: %(choices)s "
                     "(default: A)")
    tra.add_argument("--scaling", default="lora", help=_SCALING_HELP)
    tra.add_argument("--optimizer", default="adam", choices=["adam", "signsgd"], help="(default: adam)")
    tra.set_defaults(run=commands.run_transfer)
    exp = sub.add_parser("explain", help="what the γ-calculus says about a saved PEFT adapter_config.json")
    exp.add_argument("config", type=_path, help="adapter_config.json or the folder holding it")
    exp.add_argument("--width", type=int, default=None, help="the adapted modules' width n (fan-in; default: "
                     "not used)")
    exp.set_defaults(run=commands.run_explain)
    return parser


_SCALING_HELP = "s = α·r^(−γ_α): lora (α/r), rslora (α/√r), constant (α) or a number γ_α (default: lora)"


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", type=_path, default=None, help="keep finished units here; a rerun "
                        "(e.g. after a kill) loads them (default: no cache)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads while a unit runs "
                        "(default: torch's own setting)")
    parser.add_argument("--max-batch-bytes", type=int, default=2 ** 31,
                        help="memory budget of one batched computation (default: 2**31)")


def _path(text: str) -> Path:
    """argparse type of path options: an empty string would silently mean the working directory."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return Path(text)


class _Lazy:
    """``choices`` read from a module when used, so that ``--help`` lists them without every command
    paying for the import (the figures module loads matplotlib)."""

    def __init__(self, module: str, registry: str, attr: str | None = None):
        self.module, self.registry, self.attr = module, registry, attr

    def __iter__(self):
        items = getattr(importlib.import_module(f"lora_theory.{self.module}"), self.registry)
        return iter([getattr(i, self.attr) for i in items] if self.attr else list(items))

    def __contains__(self, name) -> bool:
        return name in list(self)


def _add_dataclass_options(parser: argparse.ArgumentParser, cls) -> None:
    """One ``--option`` per dataclass field, typed from its annotation, help from its metadata."""
    group = parser.add_argument_group(cls.__name__)
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        typ = hints[f.name]
        kw = {"help": f.metadata.get("help", ""), "default": None}
        choices = _literal_choices(typ)
        if choices:
            kw["choices"] = choices
        else:
            kw["type"] = _scalar_type(typ)
        default = f.default if f.default is not MISSING else None
        kw["help"] += f" (default: {default})"
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f"{cls.__name__}.{f.name}",
                           metavar=None if choices else f.name.upper(), **kw)


def _simulate_defaults() -> dict:
    import inspect

    from .simulate import simulate

    return {k: p.default for k, p in inspect.signature(simulate).parameters.items()}


def _literal_choices(typ) -> list | None:
    if typing.get_origin(typ) is typing.Literal:
        return list(typing.get_args(typ))
    return None


def _scalar_type(typ):
    args = [a for a in typing.get_args(typ) if a is not type(None)] or [typ]
    return args[0] if args[0] in (int, float, str) else str


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
