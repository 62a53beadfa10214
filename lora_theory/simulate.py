"""``simulate()``: the product widths × ranks × inits × optimisers × learning rates × seeds, as one tidy table.

For each (width, rank, init, optimiser) all seeds × learning rates train as one batched computation
(a ``sweep.Unit``), split into chunks of the learning-rate (then seed) axis only when a memory budget
demands it. The frozen model of a width is built once for all its seeds. Units can be cached on disk
(resumable sweeps) and run on any ``concurrent.futures.Executor`` (``sweep.execute``).

Learning rates are absolute (``lr_exponent=None``) or width-scaled, η = C · n^c with C in ``lrs``
and c in ``lr_exponent`` (both may be lists; their product is swept). η is the learning rate of A;
B uses η · lr_ratio · n^{lr_ratio_exponent} (``TrainConfig``).
"""

from __future__ import annotations

import itertools
import math
from concurrent.futures import Executor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from .config import ModelConfig, TrainConfig
from .inits import get_init
from .optim import make_rule
from .sweep import COLUMNS, Unit, execute

__all__ = ["COLUMNS", "plan", "simulate"]


def simulate(*, widths=(128, 256, 512, 1024), lrs=1.0, lr_exponent=(-0.5, -1.0), inits=("A", "B"),
             seeds=(0, 1), optimizers="adam", ranks=4, setting: str | None = None,
             steps: int | None = None, model: ModelConfig | None = None, train_cfg: TrainConfig | None = None,
             progress: bool | None = None, max_batch_bytes: int = 2 ** 31, cache_dir: str | Path | None = None,
             executor: Executor | None = None, threads: int | None = None) -> pd.DataFrame:
    """Train every configuration of the grid and return one row per configuration and recorded step.

    Every sweepable argument (``widths, lrs, lr_exponent, inits, seeds, optimizers, ranks``) takes a
    scalar or a list. The defaults run the four (init, c) cases of PAPER.md §4.4(a) in the ``layer``
    setting: Init[A] and Init[B] at η = n^-1/2 and η = n^-1, n = 128..1024, 2 seeds, 10 Adam steps.

    Args:
        widths: widths n (integers ≥ 1).
        lrs: learning-rate constants C (or absolute learning rates when ``lr_exponent`` is None).
        lr_exponent: width exponents c of η = C·n^c, or None for absolute learning rates.
        inits: names from ``lora_theory.INITS`` ("A", "B", "AB", "peft_true", ...).
        seeds: integer seeds; a seed fixes the frozen model, the data and the LoRA init.
        optimizers: "adam", "sgd" or "signsgd".
        ranks: LoRA ranks r (≤ every width).
        setting: shortcut for ``model.setting`` ("layer" or "toy").
        steps: shortcut for ``train_cfg.steps``.
        model: ``ModelConfig`` (default ``ModelConfig()``).
        train_cfg: ``TrainConfig`` (default ``TrainConfig()``).
        progress: show a progress bar (None: only on a terminal).
        max_batch_bytes: memory budget of one batched computation; larger grids are chunked.
        cache_dir: directory where finished units are stored; a rerun (e.g. after a kill) loads them
            and computes only the rest.
        executor: a ``concurrent.futures.Executor`` (process pool, Dask ``client.get_executor()``)
            to run units on; None runs them here, one after another.
        threads: torch threads inside each unit (set it to 1 with a process pool).

    Returns:
        A ``pandas.DataFrame`` with the columns ``COLUMNS``; ``lr`` is η_A, ``lr_b`` is η_B, and
        ``diverged`` is True from the step a configuration diverged on (its later values are NaN).

    Example:
        >>> df = simulate(widths=[64, 128], seeds=0, steps=3)
        >>> sorted(df["init"].unique()), len(df)
        (['A', 'B'], 32)
    """
    model = model or ModelConfig()
    train_cfg = train_cfg or TrainConfig()
    if setting is not None:
        model = replace(model, setting=setting, n_train=None if model.setting != setting else model.n_train)
    if steps is not None:
        train_cfg = replace(train_cfg, steps=steps)
    grid = _validated_grid(widths, lrs, lr_exponent, inits, seeds, optimizers, ranks)
    units = plan(grid, model, train_cfg, max_batch_bytes, threads)
    return execute(units, cache_dir=cache_dir, executor=executor, progress=progress)


def plan(grid: dict[str, list], model: ModelConfig, cfg: TrainConfig, budget: int = 2 ** 31,
         threads: int | None = None) -> list[Unit]:
    """The units of a validated grid, chunked so that one unit's big tensors fit in ``budget`` bytes.

    A configuration holds about six (N, n) tensors (N training plus test samples); a unit of
    S seeds × L learning rates holds S·L of them. The learning-rate axis is split first, then seeds.
    """
    pairs = list(itertools.product(grid["lrs"], grid["lr_exponent"]))
    units, seeds = [], grid["seeds"]
    N = model.n_train + (model.n_test if model.setting == "toy" else 0)
    for n, r, init, opt in itertools.product(grid["widths"], grid["ranks"], grid["inits"], grid["optimizers"]):
        per_config = 6 * N * n * (8 if cfg.dtype == "float64" else 4)
        n_lr = max(1, min(len(pairs), budget // (per_config * len(seeds))))
        n_seed = len(seeds) if n_lr > 1 else max(1, min(len(seeds), budget // per_config))
        for j in range(0, len(pairs), n_lr):  # seeds are split only when n_lr == 1: row order is kept
            for i in range(0, len(seeds), n_seed):
                units.append(Unit(model, cfg, n, r, init, opt, tuple(seeds[i:i + n_seed]),
                                  tuple(pairs[j:j + n_lr]), threads))
    return units


def _as_list(value, name: str) -> list:
    """A scalar or an iterable as a non-empty list; ValueError naming ``name`` when empty."""
    if value is None or isinstance(value, (str, int, float)):
        values = [value]
    else:
        values = list(value)
    if not values:
        raise ValueError(f"{name} must not be empty")
    return values


def _validated_grid(widths, lrs, lr_exponent, inits, seeds, optimizers, ranks) -> dict[str, list]:
    grid = {"widths": _as_list(widths, "widths"), "lrs": _as_list(lrs, "lrs"),
            "lr_exponent": _as_list(lr_exponent, "lr_exponent"), "inits": _as_list(inits, "inits"),
            "seeds": _as_list(seeds, "seeds"), "optimizers": _as_list(optimizers, "optimizers"),
            "ranks": _as_list(ranks, "ranks")}
    for name in ("widths", "ranks"):
        for v in grid[name]:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be integers >= 1, got {v!r}")
    if max(grid["ranks"]) > min(grid["widths"]):
        raise ValueError(f"ranks must be <= every width, got rank {max(grid['ranks'])} > width "
                         f"{min(grid['widths'])}")
    for v in grid["lrs"]:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"lrs must be finite positive numbers, got {v!r}")
    for v in grid["lr_exponent"]:
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
            raise ValueError(f"lr_exponent must be finite numbers or None, got {v!r}")
    for v in grid["seeds"]:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"seeds must be integers >= 0, got {v!r}")
    for v in grid["inits"]:
        get_init(v)
    for v in grid["optimizers"]:
        make_rule(v, TrainConfig(), 1)
    grid["widths"] = [int(v) for v in grid["widths"]]
    grid["seeds"] = [int(v) for v in grid["seeds"]]
    grid["ranks"] = [int(v) for v in grid["ranks"]]
    return grid
