"""``simulate()``: widths × ranks × inits × optimisers × learning rates × seeds, as one tidy table.

This module holds what a run *means*; :mod:`lora_theory.cache` only runs and stores tasks.

* A **learning rate** is a :class:`LearningRate` (C, c): η_A = C·n^c at width n (absolute η when
  c is None); η_B = η_A · lr_ratio · n^{lr_ratio_exponent} (:meth:`TrainConfig.lr_b_factor`, LoRA+).
* A **seed** fixes the frozen model and data of every width (``models.generator``) and the LoRA init
  of each (width, rank) (``models.init_generator``).
* The **init** is sampled by ``inits.sample_init``; when the scheme says so, the pretrained part absorbs
  −s·B0A0 (``inits.absorb_initial_product``), so training starts at the pretrained model.
* A **unit** (:class:`Unit`) is one batched computation: all seeds × learning rates of one (width, rank,
  init, optimiser), split into chunks of the learning-rate (then seed) axis only when a memory budget
  demands it. :func:`run_unit` trains it and returns its rows (``COLUMNS``).

Flow: ``simulate`` validates the grid (:func:`validated_grid`), plans units (:func:`plan`), and hands
them to ``cache.execute(units, run_unit, cache_dir, executor)``; the frames are concatenated in order.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import cache
from .checks import check_int
from .config import ModelConfig, TrainConfig
from .engine import STATS, record_steps, train
from .grid import LearningRate, check_derived_rates, merge_configs, validated_grid
from .inits import absorb_initial_product, sample_init
from .models import get_setting, init_generator
from .optim import make_rule

__all__ = ["COLUMNS", "LearningRate", "Unit", "plan", "run_unit", "simulate", "validated_grid"]

CACHE_VERSION = 4  # bump when the engine's numbers change, so old cache entries are not reused
COLUMNS = ("setting", "init", "optimizer", "width", "rank", "lr", "lr_b", "lr_const", "lr_exponent",
           "seed", "step") + STATS + ("diverged",)
DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class Unit:
    """One batch: ``seeds`` × ``lrs`` at one width/rank/init/optimiser."""

    model: ModelConfig
    train: TrainConfig
    width: int
    rank: int
    init: str
    optimizer: str
    seeds: tuple[int, ...]
    lrs: tuple[LearningRate, ...]
    threads: int | None = None  # torch threads while the unit runs (None: leave as is)

    @property
    def description(self) -> str:
        """Everything that determines this unit's numbers (not ``threads`` or ``device``)."""
        return repr((self.model, replace(self.train, device="cpu"), self.width, self.rank, self.init,
                     self.optimizer, self.seeds, tuple(tuple(lr) for lr in self.lrs)))

    @property
    def key(self) -> str:
        return cache.make_key("simulate", CACHE_VERSION, self.description)

    @property
    def n_rows(self) -> int:
        return len(self.seeds) * len(self.lrs) * len(record_steps(self.train))


def simulate(*, widths=(128, 256, 512, 1024), lrs=1.0, lr_exponent=(-0.5, -1.0), inits=("A", "B"),
             seeds=(0, 1), optimizers="adam", ranks=4, setting: str | None = None,
             steps: int | None = None, model: ModelConfig | None = None, train_cfg: TrainConfig | None = None,
             progress: bool | None = None, max_batch_bytes: int = 2 ** 31,
             cache_dir: str | Path | None = None,
             executor: Executor | None = None, threads: int | None = None) -> pd.DataFrame:
    """Train every configuration of the grid and return one row per configuration and recorded step.

    Every sweepable argument (``widths, lrs, lr_exponent, inits, seeds, optimizers, ranks``) takes a
    scalar or a list (no repeated values). The defaults run the four (init, c) cases of docs/theory.md
    §5 in the ``layer`` setting: Init[A] and Init[B] at η = n^-1/2 and η = n^-1, n = 128..1024,
    2 seeds, 10 Adam steps.

    Args:
        widths: widths n (integers ≥ 1); ``math.inf``: the limit and ``<stat>_scaled`` (docs/theory.md §12).
        lrs: learning-rate constants C (or absolute learning rates when ``lr_exponent`` is None).
        lr_exponent: width exponents c of η = C·n^c, or None for absolute learning rates.
        inits: names from ``lora_theory.INITS`` ("A", "B", "AB", "peft_true", ...).
        seeds: integer seeds; a seed fixes the frozen model, the data and the LoRA init.
        optimizers: "adam", "sgd" or "signsgd".
        ranks: LoRA ranks r (≤ every width).
        setting: shortcut for ``ModelConfig(setting=...)``; an error if ``model`` says otherwise.
        steps: shortcut that sets ``train_cfg.steps``.
        model: ``ModelConfig`` (default ``ModelConfig()``).
        train_cfg: ``TrainConfig`` (default ``TrainConfig()``).
        progress: show a progress bar (None: only on a terminal).
        max_batch_bytes: memory budget of one batched computation; larger grids are chunked.
        cache_dir: directory where finished units are stored; a rerun (e.g. after a kill) loads them
            and computes only the rest.
        executor: a ``concurrent.futures.Executor`` (process pool, Dask ``client.get_executor()``)
            to run units on; None runs them here, one after another.
        threads: torch threads while each unit runs (set it to 1 with a process pool); the caller's
            setting is restored afterwards.

    Returns:
        A ``pandas.DataFrame`` with the columns ``COLUMNS``; ``lr`` is η_A, ``lr_b`` is η_B, and
        ``diverged`` is True from the step a configuration diverged on (its later values are NaN).

    Example:
        >>> df = simulate(widths=[64, 128], seeds=0, steps=3)
        >>> sorted(df["init"].unique()), len(df)
        (['A', 'B'], 32)
    """
    model, train_cfg = merge_configs(setting, steps, model, train_cfg)
    grid = validated_grid(widths, lrs, lr_exponent, inits, seeds, optimizers, ranks)
    if threads is not None:
        check_int("threads", threads, low=1)
    check_int("max_batch_bytes", max_batch_bytes, low=1)
    units = plan(grid, model, train_cfg, max_batch_bytes, threads)
    frames = cache.execute(units, run_unit, cache_dir=cache_dir, executor=executor, progress=progress,
                           validate=_check_frame, desc="simulate")
    df = pd.concat(frames, ignore_index=True)
    if math.inf in grid["widths"]:  # limit rows carry <stat>_scaled (docs/theory.md §12); rescale the rest
        from .limit.run import rescale
        df = rescale(df, train_cfg.lr_ratio_exponent)
    return df


def plan(grid: dict[str, list], model: ModelConfig, cfg: TrainConfig, budget: int = 2 ** 31,
         threads: int | None = None) -> list[Unit]:
    """The units of a validated grid, chunked so that one unit's big tensors fit in ``budget`` bytes.

    A configuration holds about six (N, n) tensors (N training plus test samples); a unit of
    S seeds × L learning rates holds S·L of them. The learning-rate axis is split first, then seeds.
    Every derived learning rate (η_A, η_B at every width) is checked here, before anything runs.
    """
    lrs = [LearningRate(C, c) for C, c in itertools.product(grid["lrs"], grid["lr_exponent"])]
    check_derived_rates(lrs, [n for n in grid["widths"] if n != math.inf], cfg)
    units, seeds = [], grid["seeds"]
    N = model.n_train + (model.n_test if model.setting == "toy" else 0)
    per_byte = 8 if cfg.dtype == "float64" else 4
    axes = (grid["widths"], grid["ranks"], grid["inits"], grid["optimizers"])
    for n, r, init, opt in itertools.product(*axes):
        if n == math.inf:  # the n → ∞ limit: one unit, its cases checked before anything runs
            from .limit.run import check_limit_unit
            units.append(check_limit_unit(Unit(model, cfg, n, r, init, opt, (*seeds,), (*lrs,), threads)))
            continue
        per_config = 6 * N * n * per_byte
        n_lr = max(1, min(len(lrs), budget // (per_config * len(seeds))))
        n_seed = len(seeds) if n_lr > 1 else max(1, min(len(seeds), budget // per_config))
        for j in range(0, len(lrs), n_lr):  # seeds are split only when n_lr == 1: row order is kept
            for i in range(0, len(seeds), n_seed):
                units.append(Unit(model, cfg, n, r, init, opt, tuple(seeds[i:i + n_seed]),
                                  tuple(lrs[j:j + n_lr]), threads))
    return units


def run_unit(unit: Unit) -> pd.DataFrame:
    """Train one unit and return its rows (a top-level function, so executors can pickle it)."""
    if unit.width == math.inf:  # the n → ∞ limit (docs/theory.md §12)
        from .limit.run import limit_trace
        return _to_frame(unit, *limit_trace(unit))
    with _torch_threads(unit.threads):
        cfg, n, r = unit.train, unit.width, unit.rank
        dtype = DTYPES[cfg.dtype]
        fz = frozen_parts(unit.model, n, unit.seeds, cfg.dtype, cfg.device)
        s = unit.model.multiplier(r)
        # drawn in float64 and cast, as the frozen parts are: a float32 run trains the same model
        A0, B0 = zip(*(sample_init(unit.init, n, r, init_generator(seed, n, r)) for seed in unit.seeds))
        A0, B0 = (torch.stack(X).to(cfg.device, dtype) for X in (A0, B0))  # (S, r, n), (S, n, r)
        fz = replace(fz, base=absorb_initial_product(unit.init, fz.base, A0, B0, s, Z=fz.Z),
                     base_test=None if not fz.has_test else
                     absorb_initial_product(unit.init, fz.base_test, A0, B0, s, Z=fz.Z_test))
        eta = np.array([lr.at(n) for lr in unit.lrs])  # (L,)
        lr_a = torch.tensor(eta, dtype=dtype, device=cfg.device).expand(len(unit.seeds), -1)  # (S, L)
        trace = train(get_setting(unit.model.setting), fz, A0, B0, lr_a, lr_a * cfg.lr_b_factor(n),
                      make_rule(unit.optimizer, cfg, n), s, cfg)
    return _to_frame(unit, trace, eta)


@functools.lru_cache(maxsize=1)
def frozen_parts(model: ModelConfig, n: int, seeds: tuple[int, ...], dtype: str, device: str):
    """Frozen tensors of one width for all seeds; consecutive units of the same width share them."""
    fz = get_setting(model.setting).build(n, list(seeds), model, DTYPES[dtype])
    if device == "cpu":
        return fz
    return type(fz)(*(None if x is None else x.to(device) for x in
                      (fz.Z, fz.base, fz.target, fz.w_out, fz.Z_test, fz.base_test, fz.target_test)))


# ----------------------------------------------------------------------------------------- private

@contextlib.contextmanager
def _torch_threads(n: int | None):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n:
            torch.set_num_threads(old)


def _check_frame(unit: Unit, frame) -> str | None:
    """Why a cached record cannot be this unit's rows (None: it can)."""
    if not isinstance(frame, pd.DataFrame):
        return f"expected a DataFrame, found a {type(frame).__name__}"
    if tuple(frame.columns)[:len(COLUMNS)] != COLUMNS:
        return "its columns are not simulate()'s"
    if len(frame) != unit.n_rows:
        return f"it has {len(frame)} rows, the unit has {unit.n_rows}"
    return None


def _to_frame(unit: Unit, trace, eta: np.ndarray) -> pd.DataFrame:
    T, S, L = trace.diverged.shape
    # rows ordered learning rate, seed, step: chunking the learning-rate axis keeps the order
    il, i_s, it = (a.ravel() for a in np.meshgrid(np.arange(L), np.arange(S), np.arange(T), indexing="ij"))
    consts = np.array([lr.const for lr in unit.lrs], dtype=float)
    exps = np.array([np.nan if lr.exponent is None else lr.exponent for lr in unit.lrs], dtype=float)
    lr_b = unit.train.lr_b(consts, exps, unit.width)
    cols = {"setting": unit.model.setting, "init": unit.init, "optimizer": unit.optimizer,
            "width": unit.width,
            "rank": unit.rank, "lr": eta[il], "lr_b": lr_b[il],
            "lr_const": consts[il], "lr_exponent": exps[il], "seed": np.asarray(unit.seeds)[i_s],
            "step": trace.steps[it]}
    cols.update({k: v[it, i_s, il] for k, v in trace.values.items()})
    cols["diverged"] = trace.diverged[it, i_s, il]
    return pd.DataFrame(cols, columns=list(COLUMNS) + [k for k in trace.values if k not in COLUMNS])
