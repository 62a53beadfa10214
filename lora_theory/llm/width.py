"""Width inside one pretrained model: the first updates of LoRA per unit η against each module's input width.

In all-MiniLM-L6-v2 the attention projections (query, key, value, attention.output.dense) and
``intermediate.dense`` read n_in = 384 features, the feed-forward down-projection ``output.dense`` reads
1536: LoRA on every linear layer exposes two input widths in one network. The theory (docs/theory.md §10.1)
predicts, for Adam's first step, a change of A·x per unit η that grows like n_in under Init[B] (Adam's
direction is coherent with x: a sum of n_in aligned terms; random signs would give n_in^1/2) and a change of
B·A·x per unit η that does not depend on n_in under Init[A] (B moves; A·x = Θ(1) by A's variance 1/n_in).
From 384 to 1536: ratio 4 under Init[B], 1 under Init[A].

The method (:func:`probe_run`), exactly:

1. Model: the encoder with PEFT LoRA (r = 8, α = 8) on every linear layer (36 modules), the init applied by
   :func:`.model.apply_init`, the head N(0, 0.02²); evaluation mode (no dropout); float64.
2. Batches: the training batches of a run with this seed (:func:`.train.batch_indices`, ``batch_size``
   tweets of ``tweets_nd``); batch 0 is also the *probe* batch.
3. Probe inputs: one forward pass of the probe batch before any update records each LoRA module's input x
   over the real tokens, (T, n_in), normalised to x̂ = x / RMS(x) (one scalar per module), so RMS(x̂) = 1 in
   every module and only the weights' change is measured.
4. ``steps`` AdamW updates (β = (0.9, 0.999), ε = 1e-8, no weight decay, constant η = ``lr``, every LoRA
   tensor and the head), on batches 0, 1, …
5. After step t, per module: ``dz_a`` = RMS over (T, r) of x̂·(A_t − A_0)ᵀ / η and ``dz_b`` = RMS over
   (T, n_out) of s·x̂·(A_tᵀB_tᵀ − A_0ᵀB_0ᵀ) / η. At step 1 each init's first moving quantity (``HEADLINE``:
   A·x̂ under Init[B], s·B·A·x̂ under Init[A], whose A does not move at step 1) is exactly linear in η, so
   its number does not depend on ``lr``; later steps, and Init[B]'s ``dz_b`` (a ΔB·ΔA term), do.
6. :func:`probe_ratios`: mean over the modules with n_in = 1536 divided by the mean over those with
   n_in = 384, and the matched pair ``output.dense`` / ``attention.output.dense`` (both write 384 features).

``python -m lora_theory.llm --probe`` rebuilds ``results/llm/width/`` (records in ``runs/``, resumable).
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from .. import cache
from ..checks import as_list, check_int, check_positive, lookup
from ..inits import INITS, colours
from .data import collate, encoded
from .model import init_model, load_encoder, lora_modules
from .train import batch_indices

PROBE_COLUMNS = ("model", "init", "seed", "lr", "step", "module", "kind", "n_in", "n_out", "dz_a", "dz_b")
PROBE_VERSION = 1
HEADLINE = {"B": "dz_a", "A": "dz_b", "peft_true": "dz_b"}  # the first quantity that moves, per init
PRESET = {"full": dict(inits=("B", "A", "peft_true"), seeds=(0, 1, 2), lrs=(1e-4, 1e-3), steps=5,
                       batch_size=32),
          "quick": dict(inits=("B", "peft_true"), seeds=(0,), lrs=(1e-3,), steps=1, batch_size=16)}

__all__ = ["PROBE_COLUMNS", "WidthProbe", "fig_llm_width", "plot_width", "probe_ratios", "probe_run",
           "width_probe", "write_probe"]


@dataclass(frozen=True)
class WidthProbe:
    """One probe (a task of :func:`lora_theory.cache.execute`): init, seed, η, steps, batch size, model."""

    init: str
    seed: int = 0
    lr: float = 1e-3
    steps: int = 5
    batch_size: int = 32
    model: str = "minilm"
    dataset: str = "tweets_nd"

    @property
    def description(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @property
    def key(self) -> str:
        return cache.make_key("llm-width", PROBE_VERSION, self.description)


def width_probe(inits=("B", "peft_true"), seeds=(0,), lrs=(1e-3,), steps: int = 5, batch_size: int = 32,
                out_dir=None, executor=None) -> pd.DataFrame:
    """Run :func:`probe_run` for every (init, seed, lr); returns the per-module table (``PROBE_COLUMNS``).

    Every argument is checked before the model loads; ``out_dir`` stores one json record per probe."""
    inits, seeds, lrs = as_list(inits, "inits"), as_list(seeds, "seeds"), as_list(lrs, "lrs")
    for init in inits:
        lookup(INITS, init, "inits")
    steps, batch_size = check_int("steps", steps), check_int("batch_size", batch_size)
    probes = [WidthProbe(i, check_int("seeds", s, low=0), check_positive("lrs", lr), steps, batch_size)
              for i in inits for s in seeds for lr in lrs]
    out = cache.execute(probes, probe_run, cache_dir=out_dir, executor=executor, codec="json",
                        desc="width probe", progress=False)
    return pd.concat(out, ignore_index=True)


def probe_run(p: WidthProbe) -> pd.DataFrame:
    """One probe, as described in the module docstring (a top-level function: executors pickle it)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(p.seed)
        train, _ = encoded(p.dataset, 64, p.model)
        encoder = copy.deepcopy(_encoder(p.model))  # loaded once per process
        model = init_model(encoder, p.init, p.seed, train[2]).eval().double()
        mods = lora_modules(model.encoder)
        opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=p.lr, weight_decay=0.0)
        g = torch.Generator().manual_seed(p.seed)
        batches = list(batch_indices(len(train[1]), p.batch_size, p.steps, g))
        x_hat = _probe_inputs(model, mods, collate([train[0][i] for i in batches[0]], model.pad_id))
        z0 = _features(mods, x_hat)
        rows = []
        for t, idx in enumerate(batches, start=1):
            ids, mask = collate([train[0][i] for i in idx], model.pad_id)
            loss = torch.nn.functional.cross_entropy(model(ids, mask), torch.as_tensor(train[1][idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for (name, m), (za, zb), (za0, zb0) in zip(mods, _features(mods, x_hat), z0):
                lin_a, lin_b = m.lora_A["default"], m.lora_B["default"]
                rows.append(dict(model=p.model, init=p.init, seed=p.seed, lr=p.lr, step=t, module=name,
                                 kind=name.split(".", 2)[-1], n_in=lin_a.in_features,
                                 n_out=lin_b.out_features, dz_a=_rms(za - za0) / p.lr,
                                 dz_b=_rms(zb - zb0) / p.lr))
    return pd.DataFrame(rows, columns=PROBE_COLUMNS)


def probe_ratios(df: pd.DataFrame, wide: int = 1536, narrow: int = 384) -> pd.DataFrame:
    """Per (model, init, lr, step) and statistic (``dz_a``, ``dz_b``): the mean over modules (and seeds) with
    n_in = ``wide`` divided by that with n_in = ``narrow`` (``ratio``), and the matched pair
    ``output.dense`` / ``attention.output.dense`` (``matched``); ``seed_min``/``seed_max`` of the per-seed
    ``ratio``.

    >>> t = pd.DataFrame({"model": "m", "init": "B", "lr": 1.0, "step": 1, "seed": 0, "n_in": [384, 1536],
    ...                   "kind": ["attention.output.dense", "output.dense"], "dz_a": [1.0, 4.0],
    ...                   "dz_b": 2.0})
    >>> probe_ratios(t)[["stat", "ratio", "matched"]].to_dict("records")
    [{'stat': 'dz_a', 'ratio': 4.0, 'matched': 4.0}, {'stat': 'dz_b', 'ratio': 1.0, 'matched': 1.0}]
    """
    rows = []
    for key, g in df.groupby(["model", "init", "lr", "step"]):
        for stat in ("dz_a", "dz_b"):
            by_width = g.groupby("n_in")[stat].mean()
            per_seed = g.groupby(["seed", "n_in"])[stat].mean().unstack("n_in")
            kinds = g.groupby("kind")[stat].mean()
            seed_ratio = per_seed[wide].div(per_seed[narrow].where(per_seed[narrow] != 0))
            rows.append(dict(zip(("model", "init", "lr", "step"), key), stat=stat,
                             ratio=_ratio(by_width[wide], by_width[narrow]),
                             matched=_ratio(kinds["output.dense"], kinds["attention.output.dense"]),
                             seed_min=seed_ratio.min(), seed_max=seed_ratio.max()))
    return pd.DataFrame(rows)


def plot_width(df: pd.DataFrame, ax_modules, ax_ratio, step: int = 1):
    """Left: each init's first moving quantity (``HEADLINE``) per module at ``step`` against n_in (log-log,
    largest η); right: its 1536/384 ratio against step for every η (solid: the largest), with the theory's 4
    (Init[B], coherent), 2 (random signs) and 1 (Init[A]). Returns both axes."""
    lrs = sorted(df["lr"].unique())
    ratios = probe_ratios(df)
    for init, g in df[(df["lr"] == lrs[-1]) & (df["step"] == step)].groupby("init"):
        stat, colour = HEADLINE.get(init, "dz_b"), colours().get(init)
        name = {"A": "Init[A] N(0,1/n)", "B": "Init[B]", "peft_true": "Init[A] (PEFT)"}.get(init, init)
        jitter = 1 + 0.04 * (g["seed"].to_numpy() - g["seed"].mean())
        ax_modules.scatter(g["n_in"] * jitter, g[stat], s=10, alpha=0.5, color=colour)
        m = g.groupby("n_in")[stat].mean()
        ax_modules.plot(m.index, m.values, "o-", color=colour, label=f"{name}: {stat}")
        for lr in lrs:
            r = ratios[(ratios["init"] == init) & (ratios["stat"] == stat) & (ratios["lr"] == lr)]
            ax_ratio.plot(r["step"], r["ratio"], "o-" if lr == lrs[-1] else "o--", color=colour,
                          label=f"{name}, η={lr:g}")
    ax_modules.set(xscale="log", yscale="log", xlabel="module input width n_in",
                   ylabel=f"RMS change per unit η after step {step}")
    ax_modules.set_xticks([384, 1536], labels=["384", "1536"])
    ax_modules.xaxis.set_minor_locator(NullLocator())
    for level, text in ((4, "coherent (∝ n_in)"), (2, "random signs"), (1, "width-free")):
        ax_ratio.axhline(level, color="grey", lw=0.8, ls=":")
        ax_ratio.text(df["step"].max(), level, text, fontsize=7, va="bottom", ha="right", color="grey")
    ax_ratio.set(xlabel="step", ylabel="ratio of means, n_in = 1536 / 384")
    ax_ratio.set_xticks(sorted(df["step"].unique()))
    for ax in (ax_modules, ax_ratio):
        ax.legend(fontsize=7)
    return ax_modules, ax_ratio


def fig_llm_width(quick: bool = False, cache_dir=None, runs_dir=None) -> tuple[Figure, dict]:
    """Width inside MiniLM: first-step LoRA updates per unit η against input width (``plot_width``).

    Full fidelity reads (or completes) the records in ``runs_dir`` (default ``results/llm/width/runs``);
    ``quick`` probes one step of two inits (seconds). Needs the ``llm`` extra."""
    kw = PRESET["quick" if quick else "full"]
    out = (Path(cache_dir) / "llm_width" if cache_dir is not None else None) if quick else \
        Path(runs_dir or "results/llm/width/runs")
    df = width_probe(**kw, out_dir=out)
    fig = Figure(figsize=(10, 3.6))
    plot_width(df, *fig.subplots(1, 2))
    fig.suptitle("MiniLM-L6, LoRA r=8 on every linear layer: first updates per unit η vs module input width")
    fig.tight_layout()
    r = probe_ratios(df)
    head = r[r.apply(lambda row: HEADLINE.get(row["init"]) == row["stat"], axis=1)]
    return fig, {f"ratio_step{s}": {f"{i}@{lr:g}": round(float(v), 3)
                                    for i, lr, v in zip(g["init"], g["lr"], g["ratio"])}
                 for s, g in head.groupby("step")}


def write_probe(out_dir="results/llm/width") -> pd.DataFrame:
    """``python -m lora_theory.llm --probe``: the full probe (resumable, records in ``<out_dir>/runs``), then
    ``probes.csv``, ``ratios.csv``, ``llm_width.png`` and ``summary.json`` in ``out_dir``."""
    out = Path(out_dir)
    fig, summary = fig_llm_width(runs_dir=out / "runs")
    df = width_probe(**PRESET["full"], out_dir=out / "runs")
    df.to_csv(out / "probes.csv", index=False)
    probe_ratios(df).to_csv(out / "ratios.csv", index=False)
    fig.savefig(out / "llm_width.png", dpi=150, bbox_inches="tight")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return df


@functools.lru_cache(maxsize=1)
def _encoder(model: str):
    """The encoder with LoRA (r = 8, α = 8) on every linear layer, as loaded (copied by each probe)."""
    return load_encoder(8, "all-linear", None, model)


def _probe_inputs(model, mods, batch) -> list[torch.Tensor]:
    """Each LoRA module's input over the real tokens of ``batch``, (T, n_in), normalised to RMS 1."""
    ids, mask = batch
    xs = {}
    hooks = [m.register_forward_pre_hook(lambda mod, inp, name=name: xs.__setitem__(name, inp[0].detach()))
             for name, m in mods]
    with torch.no_grad():
        model(ids, mask)
    for h in hooks:
        h.remove()
    return [x / _rms(x) for x in (xs[name][mask.bool()] for name, _ in mods)]


def _features(mods, x_hat) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(x̂·Aᵀ (T, r), s·x̂·Aᵀ·Bᵀ (T, n_out)) of every module, at the current weights."""
    out = []
    with torch.no_grad():
        for (_, m), x in zip(mods, x_hat):
            za = x @ m.lora_A["default"].weight.T
            out.append((za.clone(), m.scaling["default"] * za @ m.lora_B["default"].weight.T))
    return out


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b != 0 else float("nan")  # 0/0: a quantity that does not move yet (A at step 1)


def _rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())

