"""``python -m lora_theory.llm [--preset full|quick] [--out DIR] [--workers K] [--no-train]``.

Sweeps (resuming from ``<out>/runs``), then rebuilds ``<out>/llm_sweep.csv``, ``<out>/lr_table.csv`` and
``<out>/lr_sweep.png`` from the runs stored there.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from .config import PRESETS, LlmConfig
from .sweep import combine_runs, llm_sweep, lr_table, plot_lr_sweep


def main(argv=None) -> pd.DataFrame:
    """Run the command line; returns the combined table."""
    p = argparse.ArgumentParser(prog="python -m lora_theory.llm", description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="full", help="grid (default: full)")
    p.add_argument("--out", default="results/llm", help="output folder (default: results/llm)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default: 1)")
    p.add_argument("--workers", type=int, default=1, help="runs trained at once, spawned processes (default: 1)")
    p.add_argument("--no-train", action="store_true", help="only rebuild the combined CSV and figure")
    args = p.parse_args(argv)
    if args.threads < 1 or args.workers < 1:
        p.error(f"--threads and --workers must be >= 1, got {args.threads} and {args.workers}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    try:
        if not args.no_train:
            kw = dict(quick=args.preset == "quick", out_dir=out / "runs", config=LlmConfig(threads=args.threads))
            if args.workers > 1:
                with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                    llm_sweep(executor=pool, **kw)
            else:
                llm_sweep(**kw)
        df = combine_runs(out / "runs")
    except ValueError as err:
        p.exit(2, f"{p.prog}: error: {err}\n")
    df.to_csv(out / "llm_sweep.csv", index=False)
    lr_table(df).to_csv(out / "lr_table.csv", index=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    plot_lr_sweep(df, ax)
    fig.savefig(out / "lr_sweep.png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    return df


if __name__ == "__main__":
    main(sys.argv[1:])
