"""``python -m lora_theory.llm [--preset NAME] [--out DIR] [--workers K] [--no-train] [--probe]``.

Sweeps the preset ``PRESETS[NAME]`` (its grid, then its follow-up; resuming from ``<out>/runs``, default
``<out>`` the preset's own folder), then rebuilds ``<out>/llm_sweep.csv``, ``<out>/lr_table.csv`` and
``<out>/lr_sweep.png`` from the runs stored there, and for the presets after ``full`` also
``<out>/verdict.json`` (:mod:`.verdict`: optima, largest stable η, paired differences with power, and width
ratios for ``width``). ``--probe`` runs the untrained width probe instead (:mod:`.width`, default
``results/llm/width``). Every option is checked before anything is loaded.

With ``--workers K > 1`` the runs train in a spawned process pool whose workers exit when this process
dies (after storing the run they are training): a killed sweep leaves no idle orphan (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

from ..cache import exit_with_parent
from ..checks import check_dir
from .config import PRESETS, LlmConfig
from .data import DATASETS
from .sweep import combine_examples, combine_runs, lr_table, plot_lr_sweep, preset_sweep
from .verdict import (
    largest_stable_lr,
    mean_optimum,
    optimum_ratio,
    paired_difference,
    seed_optima,
    width_ratios,
)
from .width import write_probe

# spawned workers unpickle the initializer by reference, so it must live in an importable module, not in
# this file, which runs as ``__main__`` under ``python -m`` (a function defined here breaks the pool)
POOL_INITIALIZER = exit_with_parent


def main(argv=None) -> pd.DataFrame:
    """Run the command line; returns the combined table."""
    p = argparse.ArgumentParser(prog="python -m lora_theory.llm", description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="full", help="grid (default: full)")
    p.add_argument("--out", default=None, help="output folder (default: the preset's, e.g. results/llm for "
                   "full, results/llm/headline for headline)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default: 1)")
    p.add_argument("--workers", type=int, default=1,
                   help="runs trained at once, spawned processes (default: 1)")
    p.add_argument("--no-train", action="store_true", help="only rebuild the combined CSV and figure")
    p.add_argument("--probe", action="store_true", help="instead of a sweep, the untrained width probe "
                   "(lora_theory.llm.width) into --out (default results/llm/width)")
    args = p.parse_args(argv)
    if args.threads < 1 or args.workers < 1:
        p.error(f"--threads and --workers must be >= 1, got {args.threads} and {args.workers}")
    try:
        default = "results/llm/width" if args.probe else PRESETS[args.preset]["out"]
        out = check_dir("--out", args.out or default, none_ok=False)
    except (TypeError, ValueError) as err:
        p.error(str(err))
    if args.probe:
        return write_probe(out)
    if args.no_train and not any((out / "runs").glob("*.json")):
        p.error(f"--no-train: --out {str(out)!r} holds no runs ({str(out / 'runs')!r} has no *.json record); "
                "train first (drop --no-train) or pass the folder of a finished sweep")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        if not args.no_train:
            kw = {"out_dir": out / "runs", "config": LlmConfig(threads=args.threads)}
            if args.workers > 1:
                with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=POOL_INITIALIZER) as pool:
                    preset_sweep(args.preset, executor=pool, **kw)
            else:
                preset_sweep(args.preset, **kw)
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
    if args.preset not in ("full", "quick"):
        (out / "verdict.json").write_text(json.dumps(verdict(df, out / "runs", args.preset), indent=1,
                                                     default=float))
    return df


def verdict(df: pd.DataFrame, run_dir, preset: str) -> dict:
    """The numbers that decide (:mod:`.verdict`) for the runs ``df`` of ``preset`` stored in ``run_dir``:
    seed-mean and per-seed optima (test loss, accuracy), largest stable η, and PEFT's Init[A]
    (``peft_true``) minus Init[B] paired by seed, with the test examples resampled (and ``width_ratios``
    for the preset ``width``). ``chance`` is the test set's majority-class rate."""
    n_eval = int(PRESETS[preset]["n_eval"])
    labels = DATASETS[str(df["dataset"].iloc[0])]()[1].labels[:n_eval]
    chance = float(np.bincount(labels).max() / len(labels))
    examples = combine_examples(run_dir)
    tables = {"chance": chance,
              **{f"optimum_{m}": mean_optimum(df, m) for m in ("test_loss", "test_accuracy")},
              **{f"seed_optima_{m}": seed_optima(df, m) for m in ("test_loss", "test_accuracy")},
              "largest_stable_lr": largest_stable_lr(df, chance)}
    inits = set(df["init"])
    for other in sorted(inits - {"peft_true"}) if "peft_true" in inits else []:
        for m in ("test_accuracy", "test_loss"):
            tables[f"peft_true-{other}_{m}"] = paired_difference(df, "peft_true", other, m, examples)
            tables[f"peft_true/{other}_optimum_ratio_{m}"] = optimum_ratio(df, "peft_true", other, m)
    both = df.groupby("width")["init"].apply(lambda i: {"peft_true", "B"} <= set(i))
    if preset == "width" and len(both) > 1 and both.all():  # a partial sweep: no ratio yet
        tables["width_ratios"] = width_ratios(df, "peft_true", "B", chance)
    return {k: v.to_dict("records") if isinstance(v, pd.DataFrame) else v for k, v in tables.items()}


if __name__ == "__main__":
    main(sys.argv[1:])
