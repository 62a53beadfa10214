"""The handlers of the ``lora-theory`` subcommands: each turns parsed arguments into one library call and
prints or writes its result (:mod:`lora_theory.cli` builds the parser). User errors are ``ValueError``s
that ``cli.main`` prints as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from .checks import check_dir, check_int, check_unique
from .config import ModelConfig, TrainConfig

SWEEP = {  # simulate() argument -> (type, help)
    "widths": (int, "widths n"),
    "lrs": (float, "learning-rate constants C (absolute learning rates with --absolute-lr)"),
    "lr_exponent": (float, "width exponents c of η = C·n^c"),
    "inits": (str, "initialisations (`lora_theory.INITS`)"),
    "seeds": (int, "seeds"),
    "optimizers": (str, "optimisers"),
    "ranks": (int, "LoRA ranks r"),
}


def scaling_value(text: str):  # a convention name, or a number γ_α
    return float(text) if text[-1:].isdigit() else text


def run_transfer(args: argparse.Namespace) -> int:
    from .transfer import transfer_lr

    t = transfer_lr(args.lr, args.source, args.target, args.init, scaling_value(args.scaling), args.optimizer)
    print(f"{t.explanation}\npredicted lr: {t.lr:.4g}")
    return 0


def run_explain(args: argparse.Namespace) -> int:
    from .llm.explainer import explain

    print(explain(args.config, width=None if args.width is None else check_int("--width", args.width)))
    return 0


def run_simulate(args: argparse.Namespace) -> int:
    from .simulate import simulate

    check_out(args.out)
    model = ModelConfig(**collect_config(args, ModelConfig))
    train_cfg = TrainConfig(**collect_config(args, TrainConfig))
    kwargs = {k: getattr(args, k) for k in SWEEP if getattr(args, k) is not None}
    if args.absolute_lr:
        kwargs["lr_exponent"] = None
    if args.absolute_lr and args.lr_exponent is not None:
        raise ValueError("--absolute-lr and --lr-exponent exclude each other: absolute learning rates have "
                         "no width exponent")
    df = simulate(**kwargs, model=model, train_cfg=train_cfg, progress=not args.no_progress,
                  cache_dir=args.cache_dir, threads=args.threads, max_batch_bytes=args.max_batch_bytes)
    args.out.parent.mkdir(parents=True, exist_ok=True)  # checked by check_out before the sweep
    if args.out.suffix == ".parquet":
        df.to_parquet(args.out, index=False)
    else:
        df.to_csv(args.out, index=False)
    n_div = df.groupby(["init", "optimizer", "width", "rank", "lr", "seed"])["diverged"].any().sum()
    print(f"wrote {len(df)} rows to {args.out} ({n_div} diverged configurations)")
    return 0


def check_out(out: Path) -> None:
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


def check_dirs(args: argparse.Namespace) -> None:
    """``--out`` and ``--cache-dir`` must be (or be able to become) folders: checked before any work."""
    check_dir("--out", args.out, none_ok=False)
    check_dir("--cache-dir", args.cache_dir)


def run_derive(args: argparse.Namespace) -> int:
    from .theory import derivation

    c = args.lr_exponent
    if c is not None and len(c) > 2:
        raise ValueError(f"--lr-exponent takes c or c_A c_B (one or two values), got {c}")
    c = None if c is None else (c[0] if len(c) == 1 else tuple(c))
    for init in args.inits:
        print(derivation(init, c, optimizer=args.optimizer, steps=args.steps,
                         fmt="latex" if args.latex else "markdown", rank_exponent=args.rank_exponent,
                         scaling=scaling_value(args.scaling)))
        print()
    return 0


def run_slopes(args: argparse.Namespace) -> int:
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


def run_validate(args: argparse.Namespace) -> int:
    import json

    from .validate import main as validate

    check_dirs(args)
    summary = validate(out=args.out, quick=args.quick, cache_dir=args.cache_dir)
    print(json.dumps(summary, indent=1, default=str))
    return 0


def run_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import main as calibrate

    check_dirs(args)
    check_unique("--cases", args.cases or [])
    table = calibrate(out=args.out, quick=args.quick, cache_dir=args.cache_dir, cases=args.cases)
    print(table.round(3).to_string(index=False))
    return 0


def run_figures(args: argparse.Namespace) -> int:
    from .figures import main as figures

    check_dirs(args)
    check_unique("--only", args.only or [])
    check_int("--workers", args.workers)
    figures(out=args.out, only=args.only, quick=args.quick, cache_dir=args.cache_dir, workers=args.workers)
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from .bench import main as bench

    if args.threads is not None:
        check_int("--threads", args.threads)
    bench(quick=args.quick, as_json=args.json, threads=args.threads)
    return 0


def collect_config(args: argparse.Namespace, cls) -> dict:
    prefix = f"{cls.__name__}."
    return {k[len(prefix):]: v for k, v in vars(args).items() if k.startswith(prefix) and v is not None}
