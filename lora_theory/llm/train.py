"""One LLM run: :class:`LlmRun` (what identifies it) and :func:`train_run` (how it is trained).

A run fine-tunes MiniLM with PEFT LoRA from the init ``init`` at learning rate ``lr`` with seed ``seed``
(which sets the LoRA init, the head, the batch order and dropout) and returns two tables: ``"run"``
(``LLM_COLUMNS``, one row per recorded step; the last also holds the test metrics) and ``"modules"``
(``MODULE_COLUMNS``, per-module RMS of A·x and s·B·A·x).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import asdict, dataclass, replace

import pandas as pd
import torch

from ..cache import make_key
from .config import LLM_COLUMNS, MODULE_COLUMNS, SCHEDULES, LlmConfig
from .data import collate, encoded
from .model import WIDTH, Recorder, build_model, evaluate

RUN_VERSION = 1  # bump when a run's numbers change


@dataclass(frozen=True)
class LlmRun:
    """One (config, init, lr, seed): a task of :func:`lora_theory.cache.execute`."""

    config: LlmConfig
    init: str
    lr: float
    seed: int

    @property
    def description(self) -> str:
        """The run's identity as sorted JSON (``threads`` left out: it does not change the numbers)."""
        cfg = asdict(replace(self.config, threads=1))
        del cfg["threads"]
        return json.dumps({**cfg, "init": self.init, "lr": self.lr, "seed": self.seed}, sort_keys=True,
                          default=list)

    @property
    def key(self) -> str:
        return make_key("llm", RUN_VERSION, self.description)


def train_run(run: LlmRun) -> dict[str, pd.DataFrame]:
    """Train one run (a top-level function, so executors can pickle it); never raises on divergence:
    a run whose loss turns non-finite stops there with ``diverged=True`` and NaN test metrics."""
    t0 = time.perf_counter()
    rows, mods = _train(run.config, run.init, run.lr, run.seed)
    rows["wall_s"] = time.perf_counter() - t0
    return {"run": rows, "modules": mods}


def _train(cfg: LlmConfig, init: str, lr: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One run; rows at steps 0, k, 2k, …, steps (the last after all updates, on a fresh batch, no update)."""
    with _threads(cfg.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout
        train, test = encoded(cfg.dataset, cfg.max_len)
        model = build_model(init, cfg.rank, cfg.targets, seed, train[2], cfg.alpha).train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: SCHEDULES[cfg.schedule](t, cfg.steps))
        rec, rows, diverged = Recorder(model), [], False
        g = torch.Generator().manual_seed(seed)
        for t, idx in enumerate(_batch_indices(len(train[1]), cfg.batch_size, cfg.steps + 1, g)):
            ids, mask = collate([train[0][i] for i in idx])
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
