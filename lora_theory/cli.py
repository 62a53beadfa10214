"""Command line: ``lora-theory {simulate, slopes, figures, validate, calibrate, derive, bench}``.

Options of the config dataclasses are generated from their fields and ``metadata["help"]``; the
sweepable arguments of :func:`lora_theory.simulate` take one or more values. This module holds
no logic beyond parsing and calling the library.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from dataclasses import MISSING, fields
from pathlib import Path

from .config import ModelConfig, TrainConfig

_SWEEP = {  # simulate() argument -> (type, help)
    "widths": (int, "widths n"),
    "lrs": (float, "learning-rate constants C (absolute learning rates with --absolute-lr)"),
    "lr_exponent": (float, "width exponents c of η = C·n^c"),
    "inits": (str, "initialisations (see `lora_theory.INITS`: A, B, AB, AB_raw, peft_true, ...)"),
    "seeds": (int, "seeds"),
    "optimizers": (str, "optimisers: adam, sgd, signsgd"),
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
    for name, (typ, text) in _SWEEP.items():
        sim.add_argument(f"--{name.replace('_', '-')}", type=typ, nargs="+", default=None, metavar="V",
                         help=f"{text} (default: {defaults[name]})")
    sim.add_argument("--absolute-lr", action="store_true", help="treat --lrs as absolute learning rates")
    _add_dataclass_options(sim, ModelConfig)
    _add_dataclass_options(sim, TrainConfig)
    sim.add_argument("--out", type=Path, default=Path("simulate.csv"),
                     help="output .csv or .parquet file, checked before the sweep starts (default: simulate.csv)")
    sim.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_run_options(sim)
    sim.set_defaults(run=_run_simulate)
    ben = sub.add_parser("bench", help="time the batched engine against a per-configuration torch loop")
    ben.add_argument("--quick", action="store_true", help="small cases (seconds)")
    ben.add_argument("--json", action="store_true", help="print one JSON object")
    ben.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ben.set_defaults(run=_bench_main)
    slo = sub.add_parser("slopes", help="the first scaling check: measured width exponents vs the γ-calculus")
    slo.add_argument("--widths", type=int, nargs="+", default=[2 ** k for k in range(7, 13)], metavar="N")
    slo.add_argument("--seeds", type=int, nargs="+", default=list(range(6)), metavar="S")
    slo.add_argument("--steps", type=int, default=4, help="Adam steps (layer setting, one sample)")
    slo.add_argument("--per-step", action="store_true", help="one fit per step instead of the steps ≥ 2 window")
    slo.set_defaults(run=_run_slopes)
    fig = sub.add_parser("figures", help="rebuild the reproduction's figures (PNG + PDF + summary.json)")
    fig.add_argument("--quick", action="store_true", help="small widths and few steps (seconds)")
    fig.add_argument("--only", nargs="+", default=None, metavar="NAME", help="figures to build (default: all)")
    fig.add_argument("--out", type=Path, default=Path("figures"), help="output directory")
    fig.add_argument("--cache-dir", type=Path, default=Path(".lora_theory_cache"),
                     help="where finished sweep units are kept; reruns load them (default: .lora_theory_cache)")
    fig.set_defaults(run=_run_figures)
    val = sub.add_parser("validate", help="theory-vs-measurement matrix over inits × optimisers × c (resumable)",
                         description="Measure every statistic's width exponent in every cell of the matrix and "
                         "compare it with the γ-calculus; write results/validation.")
    val.add_argument("--quick", action="store_true", help="a few inits, small widths (seconds)")
    val.add_argument("--out", type=Path, default=Path("results/validation"),
                     help="output folder (default: results/validation)")
    val.add_argument("--cache-dir", type=Path, default=Path(".lora_theory_cache"),
                     help="where finished sweep units are kept (default: .lora_theory_cache)")
    val.set_defaults(run=_run_validate)
    cal = sub.add_parser("calibrate", help="coverage study of fit_exponent's intervals (resumable)",
                         description="Run (or resume) the coverage study: many seeds per case, cut into groups of "
                         "2, 3 and 6; coverage of each interval method against the large-seed slope.")
    cal.add_argument("--quick", action="store_true", help="a tenth of the seeds (about a minute)")
    cal.add_argument("--out", type=Path, default=Path("results/calibration"),
                     help="output folder (default: results/calibration)")
    cal.add_argument("--cache-dir", type=Path, default=Path(".lora_theory_cache"),
                     help="where finished sweep units are kept (default: .lora_theory_cache)")
    cal.add_argument("--cases", nargs="+", default=None, metavar="NAME", help="cases to run (default: all)")
    cal.set_defaults(run=_run_calibrate)
    der = sub.add_parser("derive", help="print the γ-exponent derivation of each initialisation")
    der.add_argument("--inits", nargs="+", default=["A", "B"], help="initialisations to derive")
    der.add_argument("--lr-exponent", type=float, nargs="+", default=None,
                     help="c (shared) or c_A c_B; default: the maximal stable c of each init")
    der.add_argument("--optimizer", default="adam", help="adam, signsgd or sgd")
    der.add_argument("--steps", type=int, default=4, help="number of steps to derive")
    der.add_argument("--latex", action="store_true", help="emit LaTeX instead of markdown")
    der.set_defaults(run=_run_derive)
    return parser


def _run_simulate(args: argparse.Namespace) -> int:
    from .simulate import simulate

    _check_out(args.out)
    model = ModelConfig(**_collect(args, ModelConfig))
    train_cfg = TrainConfig(**_collect(args, TrainConfig))
    kwargs = {k: getattr(args, k) for k in _SWEEP if getattr(args, k) is not None}
    if args.absolute_lr:
        kwargs["lr_exponent"] = None
    if args.absolute_lr and args.lr_exponent is not None:
        raise ValueError("--absolute-lr and --lr-exponent exclude each other: absolute learning rates have no "
                         "width exponent")
    df = simulate(**kwargs, model=model, train_cfg=train_cfg, progress=not args.no_progress,
                  cache_dir=args.cache_dir, threads=args.threads, max_batch_bytes=args.max_batch_bytes)
    if args.out.suffix == ".parquet":
        df.to_parquet(args.out, index=False)
    else:
        df.to_csv(args.out, index=False)
    n_div = df.groupby(["init", "optimizer", "width", "rank", "lr", "seed"])["diverged"].any().sum()
    print(f"wrote {len(df)} rows to {args.out} ({n_div} diverged configurations)")
    return 0


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="keep finished units here; a rerun (e.g. after a kill) loads them (default: no cache)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads while a unit runs "
                        "(default: torch's own setting)")
    parser.add_argument("--max-batch-bytes", type=int, default=2 ** 31,
                        help="memory budget of one batched computation (default: 2**31)")


def _check_out(out: Path) -> None:
    """The output file must be writable with a supported extension: checked before any computation."""
    if out.suffix not in (".csv", ".parquet"):
        raise ValueError(f"--out must end in .csv or .parquet, got {str(out)!r}")
    if out.is_dir():
        raise ValueError(f"--out must be a file path, got the directory {str(out)!r}")
    if out.suffix == ".parquet":
        import importlib.util

        if importlib.util.find_spec("pyarrow") is None:
            raise ValueError("--out *.parquet needs pyarrow (pip install 'lora_theory[parquet]'); use a .csv path "
                             "otherwise")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--out: cannot create the folder {str(out.parent)!r} ({err.strerror})") from None
    if not os.access(out.parent, os.W_OK):
        raise ValueError(f"--out: the folder {str(out.parent)!r} is not writable")


def _run_derive(args: argparse.Namespace) -> int:
    from .theory import derivation

    c = args.lr_exponent
    c = None if c is None else (c[0] if len(c) == 1 else tuple(c))
    for init in args.inits:
        print(derivation(init, c, optimizer=args.optimizer, steps=args.steps,
                         fmt="latex" if args.latex else "markdown"))
        print()
    return 0


def _run_slopes(args: argparse.Namespace) -> int:
    import pandas as pd

    from .analysis import slope_table
    from .simulate import simulate

    cases = [("A", -0.5), ("B", -1.0), ("A", -1.0), ("B", -0.5)]
    df = pd.concat([simulate(widths=args.widths, inits=i, lr_exponent=c, seeds=args.seeds, steps=args.steps,
                             progress=False) for i, c in cases])
    table = slope_table(df, per_step=args.per_step).round(3)
    print(table.to_markdown(index=False) if _has_tabulate() else table.to_string(index=False))
    return 0


def _has_tabulate() -> bool:
    import importlib.util

    return importlib.util.find_spec("tabulate") is not None


def _run_validate(args: argparse.Namespace) -> int:
    import json

    from .validate import main as validate

    print(json.dumps(validate(out=args.out, quick=args.quick, cache_dir=args.cache_dir), indent=1, default=str))
    return 0


def _run_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import CASES, main as calibrate

    unknown = sorted(set(args.cases or []) - {c.name for c in CASES})
    if unknown:
        raise ValueError(f"--cases must be among {[c.name for c in CASES]}, got {unknown}")
    table = calibrate(out=args.out, quick=args.quick, cache_dir=args.cache_dir, cases=args.cases)
    print(table.round(3).to_string(index=False))
    return 0


def _run_figures(args: argparse.Namespace) -> int:
    from .figures import main as figures

    figures(out=args.out, only=args.only, quick=args.quick, cache_dir=args.cache_dir)
    return 0


def _bench_main(args: argparse.Namespace) -> int:
    from .bench import main as bench

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
