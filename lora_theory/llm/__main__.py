"""``python -m lora_theory.llm [--preset full|quick] [--out DIR] [--workers K] [--no-train]``.

Sweeps (resuming from ``<out>/runs``), then rebuilds ``<out>/llm_sweep.csv``, ``<out>/lr_table.csv`` and
``<out>/lr_sweep.png`` from the runs stored there. Every option is checked before anything is loaded.

With ``--workers K > 1`` the runs train in a spawned process pool whose workers exit when this process
dies (after storing the run they are training): a killed sweep leaves no idle orphan (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import pandas as pd

from ..checks import check_dir
from .config import PRESETS, LlmConfig
from .sweep import combine_runs, llm_sweep, lr_table, plot_lr_sweep


def main(argv=None) -> pd.DataFrame:
    """Run the command line; returns the combined table."""
    p = argparse.ArgumentParser(prog="python -m lora_theory.llm", description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="full", help="grid (default: full)")
    p.add_argument("--out", default="results/llm", help="output folder (default: results/llm)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default: 1)")
    p.add_argument("--workers", type=int, default=1,
                   help="runs trained at once, spawned processes (default: 1)")
    p.add_argument("--no-train", action="store_true", help="only rebuild the combined CSV and figure")
    args = p.parse_args(argv)
    if args.threads < 1 or args.workers < 1:
        p.error(f"--threads and --workers must be >= 1, got {args.threads} and {args.workers}")
    try:
        out = check_dir("--out", args.out, none_ok=False)
    except (TypeError, ValueError) as err:
        p.error(str(err))
    if args.no_train and not any((out / "runs").glob("*.json")):
        p.error(f"--no-train: --out {str(out)!r} holds no runs ({str(out / 'runs')!r} has no *.json record); "
                "train first (drop --no-train) or pass the folder of a finished sweep")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        if not args.no_train:
            kw = {"quick": args.preset == "quick", "out_dir": out / "runs",
                  "config": LlmConfig(threads=args.threads)}
            if args.workers > 1:
                with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_exit_with_parent) as pool:
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


def _exit_with_parent() -> None:
    """Pool initializer: a daemon thread that ends this worker once its parent is gone and it is idle.

    An orphaned ``ProcessPoolExecutor`` worker otherwise finishes its task and then waits forever for the
    next one. The thread waits for the parent to die, then exits as soon as the worker's main thread is no
    longer running a task (only the pool's own frames on its stack), so the run in progress is finished
    and stored first.
    """
    parent = multiprocessing.parent_process()
    if parent is None:  # not a child process
        return

    def watch():
        parent.join()  # returns when the parent process has ended
        while _running_a_task():
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _running_a_task() -> bool:
    """True unless the main thread's stack holds only the pool's own frames (its loop waiting for a task,
    or sending a result that the dead parent will never read: a large one blocks on the full pipe)."""
    frame = sys._current_frames().get(threading.main_thread().ident)
    while frame is not None:
        if frame.f_code.co_name == "_process_worker":  # the pool's loop, reached through pool frames only
            return False
        if not any(f"{os.sep}{part}{os.sep}" in frame.f_code.co_filename for part in _POOL_CODE):
            return True  # a task's frame
        frame = frame.f_back
    return True


_POOL_CODE = ("multiprocessing", f"concurrent{os.sep}futures")  # where the pool's frames come from


if __name__ == "__main__":
    main(sys.argv[1:])
