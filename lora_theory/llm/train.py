"""One LLM run: :class:`LlmRun` (what identifies it) and :func:`train_run` (how it is trained).

A run fine-tunes a pretrained encoder (``config.model``) with PEFT LoRA from the init ``init`` at learning
rate ``lr`` with seed ``seed`` (which sets the LoRA init, the head, the batch order and dropout) and returns
three tables: ``"run"`` (``LLM_COLUMNS``, one row per recorded step; the last also holds the test metrics;
``width`` is the LoRA modules' common input width, or the model's hidden size when they differ),
``"modules"`` (``MODULE_COLUMNS``, per-module RMS of A·x and s·B·A·x) and ``"examples"`` (per held-out
example: label, correct, loss; absent from the committed runs of ``results/llm/runs``, which predate it).
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
from .config import EXAMPLE_COLUMNS, IDENTITY_DEFAULTS, LLM_COLUMNS, MODULE_COLUMNS, SCHEDULES, LlmConfig
from .data import collate, encoded
from .model import Recorder, build_model, evaluate

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
        """The run's identity as sorted JSON (``threads`` left out: it does not change the numbers; the
        fields of ``IDENTITY_DEFAULTS`` left out at their default, so that older runs keep their keys)."""
        cfg = asdict(replace(self.config, threads=1))
        del cfg["threads"]
        for name, default in IDENTITY_DEFAULTS.items():
            if cfg[name] == default:
                del cfg[name]
        return json.dumps({**cfg, "init": self.init, "lr": self.lr, "seed": self.seed}, sort_keys=True,
                          default=list)

    @property
    def key(self) -> str:
        return make_key("llm", RUN_VERSION, self.description)


def train_run(run: LlmRun) -> dict[str, pd.DataFrame]:
    """Train one run (a top-level function, so executors can pickle it); never raises on divergence:
    a run whose loss turns non-finite stops there with ``diverged=True`` and NaN test metrics."""
    t0 = time.perf_counter()
    rows, mods, examples = _train(run.config, run.init, run.lr, run.seed)
    rows["wall_s"] = time.perf_counter() - t0
    return {"run": rows, "modules": mods, "examples": examples}


def batch_indices(n: int, batch: int, steps: int, g: torch.Generator):
    """``steps`` index arrays of size ``batch``: consecutive chunks of fresh permutations (epochs) drawn from
    ``g``; a run's batches (also the probes' of :mod:`.width`)."""
    perm, pos = torch.randperm(n, generator=g).numpy(), 0
    for _ in range(steps):
        if pos + batch > n:
            perm, pos = torch.randperm(n, generator=g).numpy(), 0
        yield perm[pos:pos + batch]
        pos += batch


def _train(cfg: LlmConfig, init: str, lr: float, seed: int) -> tuple[pd.DataFrame, ...]:
    """One run; rows at steps 0, k, 2k, …, steps (the last after all updates, on a fresh batch, no update)."""
    with _threads(cfg.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout
        train, test = encoded(cfg.dataset, cfg.max_len, cfg.model)
        model = build_model(init, cfg.rank, cfg.targets, seed, train[2], cfg.alpha, cfg.model).train()
        opt = torch.optim.AdamW(_param_groups(model, cfg.head_lr), lr=lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: SCHEDULES[cfg.schedule](t, cfg.steps))
        rec, rows, diverged = Recorder(model), [], False
        g = torch.Generator().manual_seed(seed)
        for t, idx in enumerate(batch_indices(len(train[1]), cfg.batch_size, cfg.steps + 1, g)):
            ids, mask = collate([train[0][i] for i in idx], model.pad_id)
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
        none = math.nan, math.nan, pd.DataFrame(columns=EXAMPLE_COLUMNS)
        test_loss, acc, examples = none if diverged else evaluate(model, test, cfg.n_eval, examples=True)
    meta = dict(setting="llm", dataset=cfg.dataset, init=init, optimizer="adamw", width=model.lora_width,
                rank=cfg.rank, lr=lr, seed=seed)
    df = pd.DataFrame(rows).assign(**meta, test_loss=math.nan, test_accuracy=math.nan, diverged=diverged)
    df.loc[df.index[-1], ["test_loss", "test_accuracy"]] = test_loss, acc
    mods = pd.DataFrame(rec.records).assign(init=init, lr=lr, seed=seed)
    return df.reindex(columns=LLM_COLUMNS), mods.reindex(columns=MODULE_COLUMNS), examples


def _param_groups(model, head_lr: float | None) -> list:
    """One group (every trainable tensor at the LoRA η) or, with ``head_lr``, the head in its own group."""
    params = [p for p in model.parameters() if p.requires_grad]
    if head_lr is None:
        return params
    head = {id(p) for p in model.head.parameters()}
    return [{"params": [p for p in params if id(p) not in head]},
            {"params": [p for p in params if id(p) in head], "lr": head_lr}]


@contextlib.contextmanager
def _threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
