"""Sweeps of the LLM experiment over (init, learning rate, seed), their tables and their plot.

Runs are tasks of :func:`lora_theory.cache.execute` (json records, one per run, in ``out_dir``): a
rerun reads finished runs back, a killed sweep loses only the runs in progress.
"""

from __future__ import annotations

import math
from concurrent.futures import Executor
from dataclasses import replace

import pandas as pd

from .. import cache
from ..checks import as_list, check_dir, check_int, check_unique, is_int, is_real, lookup
from ..inits import INITS, colours
from .config import LLM_COLUMNS, PRESETS, LlmConfig
from .model import check_model_args
from .train import LlmRun, train_run
from .verdict import best_lrs

__all__ = ["coord_check", "combine_examples", "combine_runs", "final_rows", "followup_runs", "llm_runs",
           "llm_sweep", "lr_table", "plot_lr_sweep", "preset_runs", "preset_sweep"]


def llm_sweep(lrs=None, inits=("A", "B"), seeds=None, steps=None, dataset=None, n_eval=None,
              quick: bool = False, out_dir=None, config: LlmConfig | None = None,
              executor: Executor | None = None, progress: bool | None = None) -> pd.DataFrame:
    """Train every (init, lr, seed) and return the tidy table (``LLM_COLUMNS``).

    Every argument is checked before the model is loaded.

    Args:
        lrs, inits, seeds: the grid (scalars or lists); inits are keys of ``lora_theory.INITS``.
        steps, n_eval: optimiser updates and held-out examples evaluated per run.
        dataset: key of ``DATASETS`` (default ``config.dataset``).
        quick: take unset (None) ``lrs, seeds, steps, n_eval`` from ``PRESETS["quick"]``, not ``"full"``.
        out_dir: folder of the per-run records (``<key>.json``, :mod:`lora_theory.cache`); runs already
            there are read back, not retrained. None: nothing is stored.
        config: :class:`LlmConfig` for everything else.
        executor: any ``concurrent.futures.Executor`` (e.g. a spawn process pool with one worker per
            core and ``config.threads = 1``); each run is stored by the worker that trains it.
        progress: show a progress bar (None: only on a terminal).

    Returns:
        The runs' rows (``LLM_COLUMNS``), seed outermost, then learning rate, then init.
    """
    check_dir("out_dir", out_dir)
    runs = llm_runs(lrs, inits, seeds, steps, dataset, n_eval, quick, config)
    results = cache.execute(runs, train_run, cache_dir=out_dir, executor=executor, progress=progress,
                            codec="json", validate=_check_run, desc="llm_sweep")
    return pd.concat([r["run"] for r in results], ignore_index=True)


def llm_runs(lrs=None, inits=("A", "B"), seeds=None, steps=None, dataset=None, n_eval=None,
             quick: bool = False, config: LlmConfig | None = None) -> list[LlmRun]:
    """The validated grid of :func:`llm_sweep` as :class:`LlmRun` tasks (nothing is loaded or trained)."""
    preset = PRESETS["quick" if quick else "full"]
    lrs = as_list(preset["lrs"] if lrs is None else lrs, "lrs")
    seeds = as_list(preset["seeds"] if seeds is None else seeds, "seeds")
    inits = as_list(inits, "inits")
    for v in lrs:
        if not is_real(v) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"lrs must be finite positive numbers, got {v!r}")
    for v in seeds:
        if not is_int(v) or v < 0:
            raise ValueError(f"seeds must be integers >= 0, got {v!r}")
    for v in inits:
        lookup(INITS, v, "inits")
    for name, values in (("lrs", lrs), ("seeds", seeds), ("inits", inits)):
        check_unique(name, values)
    cfg = config or LlmConfig()
    if not isinstance(cfg, LlmConfig):
        raise ValueError(f"config must be an LlmConfig or None, got {type(cfg).__name__}")
    cfg = replace(cfg, dataset=cfg.dataset if dataset is None else dataset,
                  steps=check_int("steps", preset["steps"] if steps is None else steps),
                  n_eval=check_int("n_eval", preset["n_eval"] if n_eval is None else n_eval))
    for init in inits:  # init-specific constraints (an even rank for peft_orthogonal)
        check_model_args(init, cfg.rank, cfg.targets, model=cfg.model)
    # seed outermost: a partial sweep is balanced across inits
    return [LlmRun(cfg, init, float(lr), int(seed)) for seed in seeds for lr in lrs for init in inits]


def preset_runs(name: str, config: LlmConfig | None = None) -> list[LlmRun]:
    """The grid of ``PRESETS[name]`` (every arm × lr × init × seed, seed outermost), before any follow-up.

    Args:
        name: key of ``PRESETS``.
        config: base :class:`LlmConfig` (e.g. ``threads``); the preset's ``config`` and arms override it.
    """
    p = lookup(PRESETS, name, "preset")
    base = replace(config or LlmConfig(), **p.get("config", {}))
    arms = [replace(base, **over) for over in p.get("arms", {"": {}}).values()]
    per_arm = [llm_runs(p["lrs"], p.get("inits", ("A", "B")), p["seeds"], p["steps"], None, p["n_eval"],
                        config=cfg) for cfg in arms]
    seeds = as_list(p["seeds"], "seeds")
    return [r for s in seeds for runs in per_arm for r in runs if r.seed == s]


def followup_runs(name: str, runs: list[LlmRun], tables: list[pd.DataFrame]) -> list[LlmRun]:
    """The follow-up of ``PRESETS[name]``: its ``followup["seeds"]`` at the ``followup["top"]`` grid η of
    lowest seed-mean test loss (:func:`.verdict.best_lrs`) of each (arm, init), from the finished grid
    ``runs`` and their run ``tables``. Empty when the preset has no follow-up."""
    p = lookup(PRESETS, name, "preset")
    if "followup" not in p:
        return []
    groups: dict = {}
    for run, table in zip(runs, tables):
        groups.setdefault((run.config, run.init), []).append(table)
    best = {key: set(next(iter(best_lrs(pd.concat(t), p["followup"]["top"]).values())))
            for key, t in groups.items()}
    return [LlmRun(cfg, init, lr, s) for s in p["followup"]["seeds"] for (cfg, init), lrs in best.items()
            for lr in sorted(lrs)]


def preset_sweep(name: str, out_dir=None, config: LlmConfig | None = None,
                 executor: Executor | None = None, progress: bool | None = None) -> pd.DataFrame:
    """Train (or read back from ``out_dir``) the grid of ``PRESETS[name]``, then its follow-up; returns every
    run's rows (``LLM_COLUMNS``). Resumable: finished runs are read back, never retrained."""
    check_dir("out_dir", out_dir)
    kw = dict(cache_dir=out_dir, executor=executor, progress=progress, codec="json", validate=_check_run)
    runs = preset_runs(name, config)
    tables = [r["run"] for r in cache.execute(runs, train_run, desc=f"{name} grid", **kw)]
    more = followup_runs(name, runs, tables)
    if more:
        tables += [r["run"] for r in cache.execute(more, train_run, desc=f"{name} follow-up", **kw)]
    return pd.concat(tables, ignore_index=True)


def coord_check(init: str, lr: float, steps: int = 100, seed: int = 0, config: LlmConfig | None = None,
                out_dir=None) -> pd.DataFrame:
    """Per-module RMS of A·x and s·B·A·x during training (``MODULE_COLUMNS``), from the run's forward hooks.

    Shares the records of :func:`llm_sweep`: with the same ``out_dir`` and config a sweep run is reused.
    """
    run = llm_runs(lrs=lr, inits=init, seeds=seed, steps=steps, n_eval=(config or LlmConfig()).n_eval,
                   config=config)[0]
    return cache.execute([run], train_run, cache_dir=out_dir, codec="json", validate=_check_run,
                         desc="coord_check", progress=False)[0]["modules"]


def combine_runs(run_dir) -> pd.DataFrame:
    """Every run stored under ``run_dir``, concatenated (sorted by dataset, init, lr, seed, step).

    Raises ValueError when ``run_dir`` holds no run (e.g. a wrong path).
    """
    frames = [r["run"] for r in cache.read_all(run_dir, codec="json")]
    if not frames:
        raise ValueError(f"run_dir {str(run_dir)!r} holds no finished LLM run (*.json records)")
    df = pd.concat(frames, ignore_index=True)
    return df.sort_values(["dataset", "init", "lr", "seed", "step"], ignore_index=True)


def combine_examples(run_dir) -> pd.DataFrame:
    """Per-example test results of every run under ``run_dir`` that stored them: ``dataset, width, init, lr,
    seed`` + ``EXAMPLE_COLUMNS`` (runs without an ``examples`` table, e.g. the committed 32, are left out)."""
    frames = [r["examples"].assign(**r["run"].iloc[-1][["dataset", "width", "init", "lr", "seed"]].to_dict())
              for r in cache.read_all(run_dir, codec="json") if len(r.get("examples", ()))]
    if not frames:
        raise ValueError(f"run_dir {str(run_dir)!r} holds no LLM run with per-example results")
    return pd.concat(frames, ignore_index=True)


def final_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The last row of every run (the one holding ``test_accuracy``)."""
    keys = ["dataset", "init", "lr", "seed"]
    return df.loc[df.groupby(keys)["step"].idxmax()].reset_index(drop=True)


def lr_table(df: pd.DataFrame, metric: str = "test_accuracy") -> pd.DataFrame:
    """Final ``metric`` per (init, lr) over seeds: ``mean, min, max, count`` (count: non-diverged seeds)."""
    return final_rows(df).groupby(["init", "lr"])[metric].agg(["mean", "min", "max", "count"]).reset_index()


def plot_lr_sweep(df: pd.DataFrame, ax=None, metric: str = "test_accuracy"):
    """Final ``metric`` vs learning rate (log x), one curve per init: seed mean, min–max band. Returns ax."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    for init, g in lr_table(df, metric).groupby("init"):
        line, = ax.plot(g["lr"], g["mean"], marker="o", label=f"Init[{init}]" if len(init) == 1 else init,
                        color=colours().get(init))
        ax.fill_between(g["lr"], g["min"], g["max"], color=line.get_color(), alpha=0.2)
    ax.set(xscale="log", xlabel="learning rate η", ylabel=metric.replace("_", " "))
    ax.legend()
    return ax


def _check_run(run: LlmRun, result) -> str | None:
    """Why a stored record is not this run's result (None: it is)."""
    if not (isinstance(result, dict) and set(result) in ({"run", "modules"}, {"run", "modules", "examples"})):
        return "expected the tables 'run', 'modules' (and 'examples')"
    if tuple(result["run"].columns) != LLM_COLUMNS or result["run"].empty:
        return "its run table does not have LLM_COLUMNS rows"
    last = result["run"].iloc[-1]
    if (last["init"], float(last["lr"]), int(last["seed"])) != (run.init, run.lr, run.seed):
        return "its rows belong to another run"
    return None
