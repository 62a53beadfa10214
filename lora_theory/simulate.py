"""``simulate()``: the product widths × ranks × inits × optimisers × learning rates × seeds, as one tidy table.

For each (rank, width) the frozen model is built once for all seeds; for each (init, optimiser) all
seeds × learning rates then train as one batched computation (``engine.train``), split into chunks
of the learning-rate axis only when a memory budget demands it.

Learning rates are absolute (``lr_exponent=None``) or width-scaled, η = C · n^c with C in ``lrs``
and c in ``lr_exponent`` (both may be lists; their product is swept). η is the learning rate of A;
B uses η · lr_ratio · n^{lr_ratio_exponent} (``TrainConfig``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import fields, replace
from typing import Iterable

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .config import ModelConfig, TrainConfig
from .engine import STATS, Trace, train
from .inits import get_init, sample_init
from .models import get_setting, init_generator
from .optim import lr_b_factor, make_rule

COLUMNS = ("setting", "init", "optimizer", "width", "rank", "lr", "lr_b", "lr_const", "lr_exponent",
           "seed", "step") + STATS + ("diverged",)
_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def simulate(*, widths=(128, 256, 512, 1024), lrs=1.0, lr_exponent=(-0.5, -1.0), inits=("A", "B"),
             seeds=(0, 1), optimizers="adam", ranks=4, setting: str | None = None,
             steps: int | None = None, model: ModelConfig | None = None, train_cfg: TrainConfig | None = None,
             progress: bool | None = None, max_batch_bytes: int = 2 ** 31) -> pd.DataFrame:
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
    setting_obj = get_setting(model.setting)
    dtype = _DTYPES[train_cfg.dtype]
    units = list(itertools.product(grid["widths"], grid["ranks"], grid["inits"], grid["optimizers"]))
    frames = []
    built = {}
    for n, r, init, opt in tqdm(units, disable=_no_bar(progress, units), desc="simulate", unit="batch"):
        if n not in built:  # frozen model: once per width for all seeds (independent of rank and init)
            built = {n: setting_obj.build(n, grid["seeds"], model, dtype)}
        fz = _to_device(built[n], train_cfg.device)
        for chunk in _lr_chunks(grid, n, r, model, train_cfg, max_batch_bytes):
            frames.append(_run_batch(setting_obj, fz, model, train_cfg, grid["seeds"], n, r, init, opt, chunk))
    return pd.concat(frames, ignore_index=True)


def run_one(setting_obj, fz, model: ModelConfig, cfg: TrainConfig, seeds: list[int], n: int, r: int,
            init: str, opt: str, lr_pairs: list[tuple[float, float | None]]) -> Trace:
    """Train one batch: all ``seeds`` × ``lr_pairs`` ((C, c) pairs) of one (width, rank, init, optimiser)."""
    dtype, dev = _DTYPES[cfg.dtype], cfg.device
    s = model.multiplier(r)
    A0, B0 = zip(*(sample_init(init, n, r, init_generator(seed, n, r), dtype) for seed in seeds))
    A0, B0 = torch.stack(A0).to(dev), torch.stack(B0).to(dev)  # (S, r, n), (S, n, r)
    if get_init(init).subtract:  # W* ← W* − s·B0A0: the adapted layer starts at the pretrained one
        fz = replace(fz, base=fz.base - s * (fz.Z @ A0.transpose(-1, -2)) @ B0.transpose(-1, -2))
        if fz.has_test:
            fz = replace(fz, base_test=fz.base_test - s * (fz.Z_test @ A0.transpose(-1, -2)) @ B0.transpose(-1, -2))
    lr = torch.tensor([_abs_lr(C, c, n) for C, c in lr_pairs], dtype=dtype, device=dev)
    lr_a = lr.expand(len(seeds), -1)  # (S, L)
    rule = make_rule(opt, cfg, n)
    return train(setting_obj, fz, A0, B0, lr_a, lr_a * lr_b_factor(cfg, n), rule, make_rule(opt, cfg, n), s, cfg)


def _run_batch(setting_obj, fz, model, cfg, seeds, n, r, init, opt, lr_pairs) -> pd.DataFrame:
    trace = run_one(setting_obj, fz, model, cfg, seeds, n, r, init, opt, lr_pairs)
    T, S, L = trace.diverged.shape
    # rows ordered learning rate, seed, step: chunking the learning-rate axis keeps the order
    idx_l, idx_s, idx_t = (a.ravel() for a in np.meshgrid(np.arange(L), np.arange(S), np.arange(T), indexing="ij"))
    consts = np.array([C for C, _ in lr_pairs], dtype=float)
    exps = np.array([np.nan if c is None else c for _, c in lr_pairs], dtype=float)
    lrs = np.array([_abs_lr(C, c, n) for C, c in lr_pairs])
    cols = {"setting": model.setting, "init": init, "optimizer": opt, "width": n, "rank": r,
            "lr": lrs[idx_l], "lr_b": lrs[idx_l] * lr_b_factor(cfg, n), "lr_const": consts[idx_l],
            "lr_exponent": exps[idx_l], "seed": np.asarray(seeds)[idx_s], "step": trace.steps[idx_t]}
    cols.update({k: v[idx_t, idx_s, idx_l] for k, v in trace.values.items()})
    cols["diverged"] = trace.diverged[idx_t, idx_s, idx_l]
    return pd.DataFrame(cols, columns=list(COLUMNS))


def _abs_lr(C: float, c: float | None, n: int) -> float:
    return C if c is None else C * n ** c


def _lr_chunks(grid, n, r, model, cfg, budget) -> Iterable[list]:
    """Split the learning-rate axis so that one batch's big tensors fit in ``budget`` bytes."""
    pairs = list(itertools.product(grid["lrs"], grid["lr_exponent"]))
    N = model.n_train + (model.n_test if model.setting == "toy" else 0)
    per_config = 6 * N * n * len(grid["seeds"]) * (8 if cfg.dtype == "float64" else 4)  # ~6 live (N, n) tensors
    size = max(1, min(len(pairs), budget // max(per_config, 1)))
    return [pairs[i:i + size] for i in range(0, len(pairs), size)]


def _to_device(fz, device: str):
    if device == "cpu":
        return fz
    return type(fz)(*(None if x is None else x.to(device) for x in astuple_shallow(fz)))


def astuple_shallow(obj) -> tuple:
    """The field values of a dataclass, not copied (unlike ``dataclasses.astuple``)."""
    return tuple(getattr(obj, f.name) for f in fields(obj))


def _no_bar(progress: bool | None, units: list) -> bool | None:
    return None if progress is None else not progress


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
    return grid
