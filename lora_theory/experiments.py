"""The experiments behind the figures: their grids (``GRIDS``), the sweeps that run them, and the numbers
they report. Figures (:mod:`lora_theory.figures`) only lay these out; paper_repro.md quotes them.

Every sweep goes through :func:`lora_theory.simulate` with a cache directory, so experiments that share a
sweep share its runs. ``quick=True`` selects small widths and few steps (seconds, for tests).
"""

from __future__ import annotations

import contextlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from .analysis import interpolated_optimal_lr, optimal_lr, optimal_lr_per_seed
from .cache import exit_with_parent
from .checks import check_int
from .config import ModelConfig, TrainConfig
from .fit import fit_exponent
from .simulate import simulate

__all__ = ["COORD_STATS", "DEFAULT_CACHE", "GRIDS", "LLM_RUNS", "TAU", "coord_sweeps", "fine_lr_grid",
           "fit_dict", "layer_lr_sweep", "loss_optimal", "loss_optimal_refined", "parallel", "refine_centres",
           "regime_sweep", "toy_config_summary", "toy_refine_cell", "toy_refine_sweep", "toy_summary",
           "toy_sweep"]

DEFAULT_CACHE = Path(".lora_theory_cache")
# the committed LLM runs, relative to a checkout's root (pass another path)
LLM_RUNS = Path("results/llm/runs")
TAU = 10.0  # Z_B threshold of the feature-level criterion: RMS(Z_B) ten times the target scale
GRIDS = {  # (full, quick)
    "toy": ({"widths": [2 ** k for k in range(7, 14)], "lrs": [2.0 ** -k for k in range(2, 15)],
             "seeds": [0, 1, 2], "n_train": 256, "steps": 200},
            {"widths": [64, 128, 256], "lrs": [2.0 ** -k for k in range(2, 11, 2)], "seeds": [0, 1],
             "n_train": 32, "steps": 20}),
    # the refinement of the toy's loss-optimal η (Fig. 2, left): per (init, width) a grid of log2 η in steps
    # of ``step`` octaves, ``octaves`` either side of the coarse sweep's seed-median optimum, more seeds, an
    # end extended by ``extend`` points (≤ ``max_extend`` times) while some seed's loss is lowest there
    "toy_refine": ({"seeds": list(range(10)), "step": 0.25, "octaves": 1.0, "extend": 2, "max_extend": 2},
                   {"seeds": [0, 1, 2], "step": 0.5, "octaves": 1.0, "extend": 1, "max_extend": 1}),
    "layer_lr": ({"widths": [2 ** k for k in range(7, 14)], "lrs": [2.0 ** (k / 4) for k in range(-80, 1)],
                  "seeds": [0, 1, 2], "steps": 10},
                 {"widths": [64, 128, 256, 512], "lrs": [2.0 ** (k / 2) for k in range(-30, 1)],
                  "seeds": [0, 1], "steps": 10}),
    "layer_coord": ({"widths": [2 ** k for k in range(7, 14)], "seeds": [0, 1, 2, 3, 4, 5], "steps": 6},
                    {"widths": [64, 128, 256, 512], "seeds": [0, 1], "steps": 4}),
    "regimes": ({"widths": [2 ** k for k in range(7, 13)], "seeds": [0, 1, 2], "steps": 6,
                 "c": [-1.5, -1.25, -1.0, -0.75, -0.5, -0.25, 0.0]},
                {"widths": [64, 128, 256, 512], "seeds": [0], "steps": 4, "c": [-1.5, -1.0, -0.5, 0.0]}),
}
COORD_STATS = ("z_a_rms", "z_b_rms", "delta1_rms", "delta2_rms", "delta3_rms")
_POOL: dict = {"executor": None}  # set by :func:`parallel`


@contextlib.contextmanager
def parallel(workers: int = 1):
    """Inside the block, the sweeps of this module run on ``workers`` processes with one torch thread each
    (``workers=1``: here, as before). The numbers do not depend on it: every unit is seeded by itself.

    >>> with parallel(1):
    ...     pass
    """
    check_int("workers", workers, low=1)
    if workers == 1:
        yield
        return
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that already runs torch threads
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=exit_with_parent) as executor:
        _POOL["executor"] = executor
        try:
            yield
        finally:
            _POOL["executor"] = None


def _run_kw() -> dict:
    """``simulate`` keywords of the current :func:`parallel` block."""
    ex = _POOL["executor"]
    return {} if ex is None else {"executor": ex, "threads": 1}


def toy_sweep(quick: bool = False, cache_dir=None) -> pd.DataFrame:
    """The toy learning-rate sweep shared by lr_scaling, feature_norms and loss_heatmap (SP readout)."""
    g = GRIDS["toy"][quick]
    model, cfg = _toy_configs(quick)
    return simulate(widths=g["widths"], lrs=g["lrs"], lr_exponent=None, inits=["A", "B"], seeds=g["seeds"],
                    model=model, train_cfg=cfg, cache_dir=_cache(cache_dir), **_run_kw())


def _toy_configs(quick: bool) -> tuple[ModelConfig, TrainConfig]:
    """The toy's model (SP readout) and training of ``GRIDS["toy"]``, shared by the coarse sweep and the
    refinement."""
    g = GRIDS["toy"][quick]
    return (ModelConfig(setting="toy", n_train=g["n_train"], readout="sp"),
            TrainConfig(steps=g["steps"], record_every=max(1, g["steps"] // 10)))


def refine_centres(coarse: pd.DataFrame, step: float) -> dict[tuple[str, int], float]:
    """(init, width) → log2 of the seed-median per-seed optimum of a coarse sweep, on the lattice of
    ``step``."""
    opt = optimal_lr_per_seed(coarse)
    med = opt.groupby(["init", "width"]).lr_opt.agg(lambda v: float(np.median(np.log2(v))))
    return {(str(i), int(n)): float(np.round(k / step) * step) for (i, n), k in med.items()}


def fine_lr_grid(centre_log2: float, step: float, lo: int, hi: int) -> list[float]:
    """η = 2^(centre + k·step) for k = lo..hi.

    >>> [float(np.log2(v)) for v in fine_lr_grid(-8.0, 0.25, -2, 2)]
    [-8.5, -8.25, -8.0, -7.75, -7.5]
    """
    return [2.0 ** (centre_log2 + k * step) for k in range(lo, hi + 1)]


def toy_refine_cell(init: str, width: int, centre_log2: float, quick: bool = False,
                    cache_dir=None) -> pd.DataFrame:
    """The refinement runs of one (init, width): the toy of ``GRIDS["toy"]`` with the seeds of
    ``GRIDS["toy_refine"]`` on its fine grid, ``octaves`` either side of 2^``centre_log2``. While some seed's
    loss is lowest at an end of the grid, that end is extended by ``extend`` points, at most ``max_extend``
    times. Each call to ``simulate`` is cached per unit, so a rerun loads what is done."""
    f = GRIDS["toy_refine"][quick]
    model, cfg = _toy_configs(quick)

    def run(lo, hi):
        return simulate(widths=[width], lrs=fine_lr_grid(centre_log2, f["step"], lo, hi), lr_exponent=None,
                        inits=[init], seeds=f["seeds"], model=model, train_cfg=cfg,
                        cache_dir=_cache(cache_dir))

    lo = -int(round(f["octaves"] / f["step"]))
    hi, frames = -lo, [run(lo, -lo)]
    for _ in range(f["max_extend"]):
        opt = interpolated_optimal_lr(pd.concat(frames)).query("method == 'edge'")
        low, high = (opt.lr_argmin == opt.lr_lo).any(), (opt.lr_argmin == opt.lr_hi).any()
        if low:
            frames.append(run(lo - f["extend"], lo - 1))
            lo -= f["extend"]
        if high:
            frames.append(run(hi + 1, hi + f["extend"]))
            hi += f["extend"]
        if not (low or high):
            break
    return pd.concat(frames, ignore_index=True).assign(centre_log2=centre_log2)


def toy_refine_sweep(quick: bool = False, cache_dir=None, coarse: pd.DataFrame | None = None) -> pd.DataFrame:
    """Fine-grid toy runs around the coarse loss-optimal η of every (init, width) of :func:`toy_sweep`
    (``coarse``, run or loaded from the cache when None); a ``centre_log2`` column says where each grid
    sits."""
    coarse = toy_sweep(quick, cache_dir) if coarse is None else coarse
    centres = refine_centres(coarse, GRIDS["toy_refine"][quick]["step"])
    ex = _POOL["executor"]
    if ex is None:
        return pd.concat([toy_refine_cell(i, n, k, quick, cache_dir) for (i, n), k in centres.items()],
                         ignore_index=True)
    # one cell per worker, widest first (they cost the most); each worker runs its cell on one thread
    order = sorted(centres, key=lambda key: -key[1])
    futures = {key: ex.submit(_refine_one_thread, *key, centres[key], quick, cache_dir) for key in order}
    return pd.concat([futures[key].result() for key in centres], ignore_index=True)


def _refine_one_thread(init, width, centre_log2, quick, cache_dir) -> pd.DataFrame:
    import torch

    torch.set_num_threads(1)
    return toy_refine_cell(init, width, centre_log2, quick, cache_dir)


def layer_lr_sweep(quick: bool = False, cache_dir=None) -> pd.DataFrame:
    """Fine absolute learning-rate grid in the layer setting, for the feature-level maximal stable η."""
    g = GRIDS["layer_lr"][quick]
    return simulate(widths=g["widths"], lrs=g["lrs"], lr_exponent=None, inits=["A", "B"], seeds=g["seeds"],
                    steps=g["steps"], cache_dir=_cache(cache_dir), **_run_kw())


def coord_sweeps(quick: bool = False, cache_dir=None) -> dict[str, tuple[float, pd.DataFrame]]:
    """Init → (c*, layer-setting run at η = n^{c*}) for Init[A] and Init[B] (the coordinate check)."""
    from .theory import max_stable_lr_exponent

    g = GRIDS["layer_coord"][quick]
    out = {}
    for init in ("A", "B"):
        c = max_stable_lr_exponent(init)
        out[init] = (c, simulate(widths=g["widths"], inits=init, lr_exponent=float(c), seeds=g["seeds"],
                                 steps=g["steps"], progress=False, cache_dir=_cache(cache_dir), **_run_kw()))
    return out


def regime_sweep(quick: bool = False, cache_dir=None, inits=("A", "B", "AB")) -> pd.DataFrame:
    """Layer-setting runs over the regime grid's learning-rate exponents c, for each init."""
    g = GRIDS["regimes"][quick]
    return simulate(widths=g["widths"], inits=list(inits), lr_exponent=g["c"], seeds=g["seeds"],
                    steps=g["steps"], progress=False, cache_dir=_cache(cache_dir), **_run_kw())


def loss_optimal(toy: pd.DataFrame):
    """Per-seed loss-optimal η and its fitted width exponent per init."""
    opt = optimal_lr_per_seed(toy)
    return opt, {i: fit_exponent(opt[opt.init == i], "lr_opt") for i in ("A", "B")}


def loss_optimal_refined(fine: pd.DataFrame):
    """Per-seed interpolated loss-optimal η of a refinement sweep
    (:func:`~lora_theory.analysis.interpolated_optimal_lr`) and its fitted width exponent per init."""
    opt = interpolated_optimal_lr(fine)
    return opt, {i: fit_exponent(opt[opt.init == i], "lr_opt") for i in ("A", "B")}


def toy_summary(toy: pd.DataFrame, fits=None) -> dict:
    """Fig. 2 numbers of a toy sweep: loss-optimal slopes (``fits`` if already fitted), η*_A/η*_B and best
    loss per width."""
    fits = fits or loss_optimal(toy)[1]
    mean_opt = optimal_lr(toy)
    ratio = mean_opt.pivot(index="width", columns="init", values="lr_opt")
    best = mean_opt.pivot(index="width", columns="init", values="loss")
    return {"loss_optimal_slope": {i: fit_dict(f) for i, f in fits.items()},
            "lr_opt_log2": {i: {int(n): float(np.log2(v)) for n, v in ratio[i].items()} for i in ("A", "B")},
            "lr_opt_ratio_A_over_B": {int(n): float(v) for n, v in (ratio["A"] / ratio["B"]).items()},
            "best_loss": {i: {int(n): round(float(v), 5) for n, v in best[i].items()} for i in ("A", "B")}}


def toy_config_summary(n_train: int = 256, steps: int = 200, seeds=(0, 1, 2), readout: str = "sp",
                       widths=None, lrs=None, cache_dir=None) -> dict:
    """:func:`toy_summary` of the toy sweep with another configuration (the search in paper_repro.md)."""
    full = GRIDS["toy"][0]
    df = simulate(widths=widths or full["widths"], lrs=lrs or full["lrs"], lr_exponent=None, inits=["A", "B"],
                  seeds=list(seeds), model=ModelConfig(setting="toy", n_train=n_train, readout=readout),
                  train_cfg=TrainConfig(steps=steps, record_every=max(1, steps // 10)),
                  cache_dir=_cache(cache_dir))
    return toy_summary(df)


def fit_dict(e) -> dict:
    """An :class:`~lora_theory.fit.Exponent` as the summary's ``{"slope", "ci95"}``, rounded to 3 digits."""
    return {"slope": round(e.slope, 3), "ci95": [round(e.lo, 3), round(e.hi, 3)]}


def _cache(cache_dir):
    return DEFAULT_CACHE if cache_dir is None else cache_dir
