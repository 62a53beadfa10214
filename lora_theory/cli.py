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

from .checks import check_dir, check_int, check_unique
from .config import ModelConfig, TrainConfig
from .inits import INITS
from .optim import OPTIMIZERS

_SWEEP = {  # simulate() argument -> (type, help)
    "widths": (int, "widths n"),
    "lrs": (float, "learning-rate constants C (absolute learning rates with --absolute-lr)"),
    "lr_exponent": (float, "width exponents c of η = C·n^c"),
    "inits": (str, "initialisations (`lora_theory.INITS`)"),
    "seeds": (int, "seeds"),
    "optimizers": (str, "optimisers"),
    "ranks": (int, "LoRA ranks r"),
}


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
    for name, (typ, text) in _SWEEP.items():
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
    sim.set_defaults(run=_run_simulate)
    ben = sub.add_parser("bench", help="time the batched engine against a per-configuration torch loop")
    ben.add_argument("--quick", action="store_true", help="small cases (seconds)")
    ben.add_argument("--json", action="store_true", help="print one JSON object")
    ben.add_argument("--threads", type=int, default=None, help="torch threads, >= 1 (default: torch's)")
    ben.set_defaults(run=_bench_main)
    slo = sub.add_parser("slopes", help="the first scaling check: measured width exponents vs the γ-calculus")
    slo.add_argument("--widths", type=int, nargs="+", default=[2 ** k for k in range(7, 13)], metavar="N",
                     help="at least two widths (default: 128 256 512 1024 2048 4096)")
    slo.add_argument("--seeds", type=int, nargs="+", default=list(range(6)), metavar="S",
                     help="at least two seeds, for the intervals (default: 0 1 2 3 4 5)")
    slo.add_argument("--steps", type=int, default=4, help="Adam steps, >= 2 (layer setting, one sample; "
                     "default: 4)")
    slo.add_argument("--per-step", action="store_true", help="one fit per step, not the steps ≥ 2 window")
    slo.set_defaults(run=_run_slopes)
    fig = sub.add_parser("figures", help="rebuild the reproduction's figures (PNG + PDF + summary.json)")
    fig.add_argument("--quick", action="store_true", help="small widths and few steps (seconds)")
    fig.add_argument("--only", nargs="+", default=None, metavar="NAME", choices=_Lazy("figures", "FIGURES"),
                     help="figures to build, among: %(choices)s (default: all)")
    fig.add_argument("--out", type=_path, default=Path("figures"), help="output directory (default: figures)")
    fig.add_argument("--cache-dir", type=_path, default=Path(".lora_theory_cache"), help="where finished "
                     "sweep units are kept; reruns load them (default: .lora_theory_cache)")
    fig.set_defaults(run=_run_figures)
    val = sub.add_parser("validate", help="theory-vs-measurement matrix: inits × optimisers × c (resumable)",
                         description="Measure every statistic's width exponent in every cell of the matrix "
                         "and compare it with the γ-calculus; write results/validation.")
    val.add_argument("--quick", action="store_true", help="a few inits, small widths (seconds)")
    val.add_argument("--out", type=_path, default=Path("results/validation"),
                     help="output folder (default: results/validation)")
    val.add_argument("--cache-dir", type=_path, default=Path(".lora_theory_cache"),
                     help="where finished sweep units are kept (default: .lora_theory_cache)")
    val.set_defaults(run=_run_validate)
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
    cal.set_defaults(run=_run_calibrate)
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
    der.set_defaults(run=_run_derive)
    tra = sub.add_parser("transfer", help="predict η at another width/rank/α from a tuned one, and say why "
                         "(docs/theory.md §13)")
    tra.add_argument("--lr", type=float, required=True, help="the learning rate tuned at --from")
    tra.add_argument("--from", dest="source", required=True, metavar="SHAPE", help="width=N,rank=R[,alpha=A]")
    tra.add_argument("--to", dest="target", required=True, metavar="SHAPE", help="width=N,rank=R[,alpha=A]")
    tra.add_argument("--init", default="A", choices=sorted(INITS), metavar="INIT", help="among: %(choices)s "
                     "(default: A)")
    tra.add_argument("--scaling", default="lora", help=_SCALING_HELP)
    tra.add_argument("--optimizer", default="adam", choices=["adam", "signsgd"], help="(default: adam)")
    tra.set_defaults(run=_run_transfer)
    exp = sub.add_parser("explain", help="what the γ-calculus says about a saved PEFT adapter_config.json")
    exp.add_argument("config", type=_path, help="adapter_config.json or the folder holding it")
    exp.add_argument("--width", type=int, default=None, help="the adapted modules' width n (fan-in; default: "
                     "not used)")
    exp.set_defaults(run=_run_explain)
    return parser


_SCALING_HELP = "s = α·r^(−γ_α): lora (α/r), rslora (α/√r), constant (α) or a number γ_α (default: lora)"


def _scaling(text: str):  # a convention name, or a number γ_α
    return float(text) if text[-1:].isdigit() else text


def _run_transfer(args: argparse.Namespace) -> int:
    from .transfer import transfer_lr

    t = transfer_lr(args.lr, args.source, args.target, args.init, _scaling(args.scaling), args.optimizer)
    print(f"{t.explanation}\npredicted lr: {t.lr:.4g}")
    return 0


def _run_explain(args: argparse.Namespace) -> int:
    from .llm.explain import explain

    print(explain(args.config, width=None if args.width is None else check_int("--width", args.width)))
    return 0


def _run_simulate(args: argparse.Namespace) -> int:
    from .simulate import simulate

    _check_out(args.out)
    model = ModelConfig(**_collect(args, ModelConfig))
    train_cfg = TrainConfig(**_collect(args, TrainConfig))
    kwargs = {k: getattr(args, k) for k in _SWEEP if getattr(args, k) is not None}
    if args.absolute_lr:
        kwargs["lr_exponent"] = None
    if args.absolute_lr and args.lr_exponent is not None:
        raise ValueError("--absolute-lr and --lr-exponent exclude each other: absolute learning rates have "
                         "no width exponent")
    df = simulate(**kwargs, model=model, train_cfg=train_cfg, progress=not args.no_progress,
                  cache_dir=args.cache_dir, threads=args.threads, max_batch_bytes=args.max_batch_bytes)
    args.out.parent.mkdir(parents=True, exist_ok=True)  # checked by _check_out before the sweep
    if args.out.suffix == ".parquet":
        df.to_parquet(args.out, index=False)
    else:
        df.to_csv(args.out, index=False)
    n_div = df.groupby(["init", "optimizer", "width", "rank", "lr", "seed"])["diverged"].any().sum()
    print(f"wrote {len(df)} rows to {args.out} ({n_div} diverged configurations)")
    return 0


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", type=_path, default=None, help="keep finished units here; a rerun "
                        "(e.g. after a kill) loads them (default: no cache)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads while a unit runs "
                        "(default: torch's own setting)")
    parser.add_argument("--max-batch-bytes", type=int, default=2 ** 31,
                        help="memory budget of one batched computation (default: 2**31)")


def _check_out(out: Path) -> None:
    """The output file must be writable with a supported extension: checked before any computation, and
    without writing anything (its folder is created after the sweep)."""
    if out.suffix not in (".csv", ".parquet"):
        raise ValueError(f"--out must end in .csv or .parquet, got {str(out)!r}")
    if out.is_dir():
        raise ValueError(f"--out must be a file path, got the directory {str(out)!r}")
    if out.suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        raise ValueError("--out *.parquet needs pyarrow: pip install -e \".[parquet]\" in a checkout (or pip "
                         "install \"lora_theory[parquet]\"); or use a .csv path")
    check_dir("--out folder", out.parent, none_ok=False)


def _check_dirs(args: argparse.Namespace) -> None:
    """``--out`` and ``--cache-dir`` must be (or be able to become) folders: checked before any work."""
    check_dir("--out", args.out, none_ok=False)
    check_dir("--cache-dir", args.cache_dir)


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


def _run_derive(args: argparse.Namespace) -> int:
    from .theory import derivation

    c = args.lr_exponent
    if c is not None and len(c) > 2:
        raise ValueError(f"--lr-exponent takes c or c_A c_B (one or two values), got {c}")
    c = None if c is None else (c[0] if len(c) == 1 else tuple(c))
    for init in args.inits:
        print(derivation(init, c, optimizer=args.optimizer, steps=args.steps,
                         fmt="latex" if args.latex else "markdown", rank_exponent=args.rank_exponent,
                         scaling=_scaling(args.scaling)))
        print()
    return 0


def _run_slopes(args: argparse.Namespace) -> int:
    import pandas as pd

    from .analysis import slope_table
    from .simulate import simulate

    if len(set(args.widths)) < 2:
        raise ValueError(f"--widths needs at least two distinct widths to fit a slope, got {args.widths}")
    if len(set(args.seeds)) < 2:
        raise ValueError(f"--seeds needs at least two seeds for the intervals, got {args.seeds}")
    check_int("--steps", args.steps, low=1 if args.per_step else 2)  # the window fit starts at step 2
    cases = [("A", -0.5), ("B", -1.0), ("A", -1.0), ("B", -0.5)]
    df = pd.concat([simulate(widths=args.widths, inits=i, lr_exponent=c, seeds=args.seeds, steps=args.steps,
                             progress=False) for i, c in cases])
    table = slope_table(df, per_step=args.per_step).round(3)
    has_tabulate = importlib.util.find_spec("tabulate") is not None
    print(table.to_markdown(index=False) if has_tabulate else table.to_string(index=False))
    return 0


def _run_validate(args: argparse.Namespace) -> int:
    import json

    from .validate import main as validate

    _check_dirs(args)
    summary = validate(out=args.out, quick=args.quick, cache_dir=args.cache_dir)
    print(json.dumps(summary, indent=1, default=str))
    return 0


def _run_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import main as calibrate

    _check_dirs(args)
    check_unique("--cases", args.cases or [])
    table = calibrate(out=args.out, quick=args.quick, cache_dir=args.cache_dir, cases=args.cases)
    print(table.round(3).to_string(index=False))
    return 0


def _run_figures(args: argparse.Namespace) -> int:
    from .figures import main as figures

    _check_dirs(args)
    check_unique("--only", args.only or [])
    figures(out=args.out, only=args.only, quick=args.quick, cache_dir=args.cache_dir)
    return 0


def _bench_main(args: argparse.Namespace) -> int:
    from .bench import main as bench

    if args.threads is not None:
        check_int("--threads", args.threads)
    bench(quick=args.quick, as_json=args.json, threads=args.threads)
    return 0


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


def _collect(args: argparse.Namespace, cls) -> dict:
    prefix = f"{cls.__name__}."
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix) and v is not None}


def _literal_choices(typ) -> list | None:
    if typing.get_origin(typ) is typing.Literal:
        return list(typing.get_args(typ))
    return None


def _scalar_type(typ):
    args = [a for a in typing.get_args(typ) if a is not type(None)] or [typ]
    return args[0] if args[0] in (int, float, str) else str


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
