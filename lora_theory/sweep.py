"""Units of work, their on-disk cache and their execution on any ``concurrent.futures.Executor``.

A :class:`Unit` is one batched computation: all seeds × learning rates of one (width, rank, init,
optimiser), or a chunk of them when a memory budget demands it. Units are frozen dataclasses,
picklable, and identified by a hash of everything that determines their numbers, so that

* a sweep with ``cache_dir`` stores each finished unit as ``<hash>.pkl``, written to a temporary
  file ``.tmp-<host>-<pid>-*.part`` and renamed (atomic on POSIX: a kill never leaves a partial
  record), and a rerun loads it instead of recomputing: a sweep killed at any moment resumes with
  only the unfinished units, and removes the temporary files that dead processes of this host left;
* the same units run unchanged on a process pool or a Dask cluster
  (``Client.get_executor()``): results come back to the calling process, which writes the cache.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import socket
import tempfile
from concurrent.futures import Executor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .config import ModelConfig, TrainConfig
from .engine import STATS, train
from .inits import get_init, sample_init
from .models import get_setting, init_generator
from .optim import lr_b_factor, make_rule

CACHE_VERSION = 2  # bump when the engine's numbers change, so old cache entries are not reused
COLUMNS = ("setting", "init", "optimizer", "width", "rank", "lr", "lr_b", "lr_const", "lr_exponent",
           "seed", "step") + STATS + ("diverged",)
DTYPES = {"float64": torch.float64, "float32": torch.float32}
log = logging.getLogger("lora_theory")


@dataclass(frozen=True)
class Unit:
    """One batch: ``seeds`` × ``lr_pairs`` ((C, c) with η = C·n^c, or (η, None)) at one width/rank/init/optimiser."""

    model: ModelConfig
    train: TrainConfig
    width: int
    rank: int
    init: str
    optimizer: str
    seeds: tuple[int, ...]
    lr_pairs: tuple[tuple[float, float | None], ...]
    threads: int | None = None  # torch threads inside a worker (None: leave as is)

    def key(self) -> str:
        """Hash of everything that determines this unit's numbers (not ``threads`` or ``device``)."""
        text = repr((CACHE_VERSION, self.model, replace(self.train, device="cpu"), self.width, self.rank,
                     self.init, self.optimizer, self.seeds, self.lr_pairs))
        return hashlib.sha256(text.encode()).hexdigest()[:32]


def run_unit(unit: Unit) -> pd.DataFrame:
    """Train one unit and return its rows (a top-level function, so executors can pickle it)."""
    if unit.threads:
        torch.set_num_threads(unit.threads)
    cfg, model, n, r = unit.train, unit.model, unit.width, unit.rank
    dtype, seeds = DTYPES[cfg.dtype], list(unit.seeds)
    setting = get_setting(model.setting)
    fz = _frozen(model, n, unit.seeds, cfg.dtype, cfg.device)
    s = model.multiplier(r)
    A0, B0 = zip(*(sample_init(unit.init, n, r, init_generator(seed, n, r), dtype) for seed in seeds))
    A0, B0 = torch.stack(A0).to(cfg.device), torch.stack(B0).to(cfg.device)  # (S, r, n), (S, n, r)
    if get_init(unit.init).subtract:  # W* ← W* − s·B0A0: the adapted layer starts at the pretrained one
        def lora0(Z):  # s·Z A0ᵀ B0ᵀ, (S, N, n)
            return s * (Z @ A0.transpose(-1, -2)) @ B0.transpose(-1, -2)

        fz = replace(fz, base=fz.base - lora0(fz.Z),
                     base_test=fz.base_test - lora0(fz.Z_test) if fz.has_test else None)
    lrs = np.array([C if c is None else C * n ** c for C, c in unit.lr_pairs])
    lr_a = torch.tensor(lrs, dtype=dtype, device=cfg.device).expand(len(seeds), -1)  # (S, L)
    trace = train(setting, fz, A0, B0, lr_a, lr_a * lr_b_factor(cfg, n), make_rule(unit.optimizer, cfg, n), s, cfg)
    return _to_frame(unit, trace, lrs)


def execute(units: list[Unit], cache_dir: str | Path | None = None, executor: Executor | None = None,
            progress: bool | None = None) -> pd.DataFrame:
    """Run ``units`` (loading cached ones), in order, and return their rows concatenated.

    Args:
        units: the planned units.
        cache_dir: directory of finished units (created if missing); None disables caching.
        executor: any ``concurrent.futures.Executor`` (process pool, ``dask.distributed`` executor);
            None runs in this process.
        progress: show a progress bar (None: only on a terminal).
    """
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(cache)
    results: dict[int, pd.DataFrame] = {}
    todo = []
    for i, unit in enumerate(units):
        hit = _load(cache, unit) if cache is not None else None
        if hit is None:
            todo.append(i)
        else:
            results[i] = hit
    log.info("simulate: %d units, %d cached, %d to compute", len(units), len(results), len(todo))
    bar = tqdm(total=len(todo), disable=None if progress is None else not progress, desc="simulate",
               unit="batch")
    for i, frame in _compute(units, todo, executor):
        if cache is not None:
            _store(cache, units[i], frame)
        results[i] = frame
        bar.update()
    bar.close()
    return pd.concat([results[i] for i in range(len(units))], ignore_index=True)


def _compute(units, todo, executor):
    if executor is None:
        for i in todo:
            yield i, run_unit(units[i])
        return
    futures = {executor.submit(run_unit, units[i]): i for i in todo}
    for fut in as_completed(futures):
        yield futures[fut], fut.result()


def _load(cache: Path, unit: Unit) -> pd.DataFrame | None:
    path = cache / f"{unit.key()}.pkl"
    return pd.read_pickle(path) if path.exists() else None


def _store(cache: Path, unit: Unit, frame: pd.DataFrame) -> None:
    """Write to a temporary file in the same directory, then rename: readers never see a partial file."""
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=f"{_TMP_PREFIX}-{os.getpid()}-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            frame.to_pickle(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, cache / f"{unit.key()}.pkl")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_TMP_PREFIX = ".tmp-" + socket.gethostname().replace("-", "_")


def _remove_stale_temporaries(cache: Path) -> None:
    """Delete temporary files of processes of this host that no longer run (killed mid-write)."""
    for path in cache.glob(f"{_TMP_PREFIX}-*.part"):
        pid = path.name[len(_TMP_PREFIX) + 1:].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@functools.lru_cache(maxsize=1)
def _frozen(model: ModelConfig, n: int, seeds: tuple[int, ...], dtype: str, device: str):
    """Frozen tensors of one width for all seeds; consecutive units of the same width share them."""
    fz = get_setting(model.setting).build(n, list(seeds), model, DTYPES[dtype])
    if device == "cpu":
        return fz
    return type(fz)(*(None if x is None else x.to(device) for x in
                      (fz.Z, fz.base, fz.target, fz.w_out, fz.Z_test, fz.base_test, fz.target_test)))


def _to_frame(unit: Unit, trace, lrs: np.ndarray) -> pd.DataFrame:
    T, S, L = trace.diverged.shape
    # rows ordered learning rate, seed, step: chunking the learning-rate axis keeps the order
    il, i_s, it = (a.ravel() for a in np.meshgrid(np.arange(L), np.arange(S), np.arange(T), indexing="ij"))
    consts = np.array([C for C, _ in unit.lr_pairs], dtype=float)
    exps = np.array([np.nan if c is None else c for _, c in unit.lr_pairs], dtype=float)
    cols = {"setting": unit.model.setting, "init": unit.init, "optimizer": unit.optimizer, "width": unit.width,
            "rank": unit.rank, "lr": lrs[il], "lr_b": lrs[il] * lr_b_factor(unit.train, unit.width),
            "lr_const": consts[il], "lr_exponent": exps[il], "seed": np.asarray(unit.seeds)[i_s],
            "step": trace.steps[it]}
    cols.update({k: v[it, i_s, il] for k, v in trace.values.items()})
    cols["diverged"] = trace.diverged[it, i_s, il]
    return pd.DataFrame(cols, columns=list(COLUMNS))
