"""The pretrained model of the LLM experiment: an encoder with PEFT LoRA, registry inits, forward hooks.

See :mod:`lora_theory.llm` for the setting. The encoder is a key of ``MODELS`` (:mod:`.weights`); its width
(``config.hidden_size``) and padding id (its tokenizer's) are read from the model, never assumed.
"""

from __future__ import annotations

import contextlib
import os
import warnings

import numpy as np
import pandas as pd
import torch

from ..checks import check_int, check_positive
from ..inits import absorb_initial_product, get_init, sample_init
from .config import check_targets
from .data import collate
from .weights import model_path, tokenizer


class LoraClassifier(torch.nn.Module):
    """A PEFT-wrapped encoder, mean pooling over real tokens and a linear head.

    Attributes:
        width: the encoder's hidden size n (384 for MiniLM, 768 for MPNet).
        pad_id: the id that pads a batch (the tokenizer's ``pad_token_id``).
    """

    def __init__(self, encoder: torch.nn.Module, num_labels: int, generator: torch.Generator,
                 pad_id: int = 0):
        super().__init__()
        self.encoder, self.pad_id = encoder, pad_id
        self.width = n = encoder.config.hidden_size
        self.head = torch.nn.Linear(n, num_labels)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn((num_labels, n), generator=generator) * 0.02)
            self.head.bias.zero_()

    @property
    def lora_width(self) -> int:
        """The common input width (fan-in) of the LoRA modules; the hidden size when they differ."""
        widths = {m.lora_A[a].in_features for _, m in lora_modules(self.encoder) for a in m.active_adapters}
        return widths.pop() if len(widths) == 1 else self.width

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits (b, num_labels) of the encoder output averaged over real tokens (``attention_mask`` = 1)."""
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (b, t, n)
        m = attention_mask.unsqueeze(-1).to(h.dtype)  # (b, t, 1)
        return self.head((h * m).sum(1) / m.sum(1).clamp(min=1.0))


def build_model(init: str = "A", rank: int = 8, targets=("query", "value"), seed: int = 0,
                num_labels: int = 2, alpha: float | None = None, model: str = "minilm") -> LoraClassifier:
    """A pretrained encoder with PEFT LoRA (``init`` applied by :func:`apply_init`) and a fresh head.

    Args:
        init: key of ``lora_theory.INITS`` ("A", "B", "peft_true", ...).
        rank: LoRA rank r.
        targets: PEFT ``target_modules``: names such as ("query", "value"), or "all-linear".
        seed: seeds the LoRA init and the head.
        num_labels: classes of the head.
        alpha: LoRA alpha (default r, so s = α/r = 1).
        model: key of ``MODELS``: "minilm" (all-MiniLM-L6-v2) or "mpnet" (all-mpnet-base-v2).

    Returns:
        A :class:`LoraClassifier`; only LoRA and the head are trainable.
    """
    check_model_args(init, rank, targets, seed, num_labels, alpha, model)
    return init_model(load_encoder(rank, targets, alpha, model), init, seed, num_labels)


def load_encoder(rank: int = 8, targets=("query", "value"), alpha: float | None = None,
                 model: str = "minilm"):
    """The pretrained encoder ``model`` wrapped by PEFT LoRA (``lora_dropout`` 0), before any registry init
    (:func:`init_model` applies one). Arguments as :func:`build_model`; checked before loading."""
    targets = check_model_args("A", rank, targets, 0, 2, alpha, model)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with _quiet():
        base = AutoModel.from_pretrained(model_path(model), add_pooling_layer=False)
        cfg = LoraConfig(r=rank, lora_alpha=rank if alpha is None else alpha, lora_dropout=0.0,
                         target_modules=targets if isinstance(targets, str) else list(targets))
        encoder = get_peft_model(base, cfg)
    encoder.lora_theory_model = model  # which MODELS entry (its tokenizer pads the batches)
    return encoder


def init_model(encoder, init: str, seed: int, num_labels: int = 2) -> LoraClassifier:
    """:func:`apply_init` with a generator seeded by ``seed``, then a fresh head drawn from the same
    generator: the classifier of :func:`build_model` (``encoder``, from :func:`load_encoder`, changes in
    place)."""
    g = torch.Generator().manual_seed(check_int("seed", seed, low=0))
    apply_init(encoder, init, g)
    pad_id = tokenizer(getattr(encoder, "lora_theory_model", "minilm")).pad_token_id
    return LoraClassifier(encoder, num_labels, g, pad_id)


def check_model_args(init: str, rank: int, targets=("query", "value"), seed: int = 0, num_labels: int = 2,
                     alpha: float | None = None, model: str = "minilm"):
    """Every argument of :func:`build_model`, checked before anything loads; returns ``targets`` normalised.

    >>> check_model_args("A", 8)
    ('query', 'value')
    """
    spec = get_init(init)
    check_int("rank", rank)
    check_int("seed", seed, low=0)
    check_int("num_labels", num_labels, low=2)
    if alpha is not None:
        check_positive("alpha", alpha)
    if spec.coupling == "orthogonal" and rank % 2:
        raise ValueError(f"rank must be even with init {init!r}, got rank={rank}")
    return check_targets(targets, model)


def apply_init(peft_model: torch.nn.Module, init: str, generator: torch.Generator) -> torch.nn.Module:
    """Set every active LoRA adapter of ``peft_model`` to the registry init ``init``, in place.

    PEFT stores A as ``lora_A.weight`` (r, n_in) and B as ``lora_B.weight`` (n_out, r), the shapes of
    :func:`lora_theory.sample_init` with n = n_in for A and n = n_out for B. For a square layer (query, value:
    384×384) one ``sample_init(init, n, r)`` call draws both, so coupled inits keep their coupling. For a
    non-square layer A is drawn with n = n_in (its fan-in, which keeps A·x = Θ(1)) and B with n = n_out; a
    coupled init ("peft_orthogonal") draws both from one Q (``sample_init(..., n_out=n_out)``), as PEFT's
    ``orthogonal_init`` does, so B·A = 0 still holds. Inits with ``subtract`` move W* to W* − s·B0·A0.
    All or nothing: every module is checked (LoRA on an ``nn.Linear``, no DoRA, an even rank for coupled
    inits) and every draw is made before any weight changes; the error names the offending module.
    Init[A] ("A": A ~ N(0, 1/n_in), B = 0) has the exponents of PEFT's default (A uniform with variance
    1/(3 n_in), which is "peft_true"); Init[B] ("B") is A = 0, B ~ N(0, 1/r).

    Returns:
        ``peft_model``.
    """
    spec = get_init(init)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {generator!r}")
    draws = []  # (module, adapter, A (r, n_in), B (n_out, r)): all drawn before any weight changes
    for mod, adapter in _lora_adapters(peft_model, init, spec.coupling == "orthogonal"):
        lin_a, lin_b = mod.lora_A[adapter], mod.lora_B[adapter]
        r, n_in, n_out = lin_a.out_features, lin_a.in_features, lin_b.out_features
        if n_in == n_out:
            A, B = sample_init(init, n_in, r, generator)  # (r, n), (n, r)
        elif spec.coupling == "independent":  # two calls: the numbers of earlier runs are kept
            A, B = sample_init(init, n_in, r, generator)[0], sample_init(init, n_out, r, generator)[1]
        else:
            A, B = sample_init(init, n_in, r, generator, n_out=n_out)  # one Q for both, as PEFT's own
        draws.append((mod, adapter, A, B))
    with torch.no_grad():
        for mod, adapter, A, B in draws:
            mod.lora_A[adapter].weight.copy_(A)
            mod.lora_B[adapter].weight.copy_(B)
            W = mod.base_layer.weight
            W.copy_(absorb_initial_product(init, W, A, B, mod.scaling[adapter]))
    return peft_model


def lora_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """``(short name, module)`` of every PEFT LoRA layer, e.g. ``("layer.0.attention.self.query", ...)``."""
    from peft.tuners.lora import LoraLayer

    return [(name.split("encoder.")[-1], m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]


class Recorder:
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
def evaluate(model: LoraClassifier, test, n_eval: int, batch: int = 128, examples: bool = False):
    """Mean cross-entropy and accuracy on the first ``n_eval`` test examples (length-sorted batches).

    With ``examples`` also a table with one row per example, in example order: ``example`` (its index in the
    test split), ``label``, ``correct`` (0/1) and ``loss`` (cross-entropy): the data of paired bootstraps.

    Returns:
        ``(loss, accuracy)``, or ``(loss, accuracy, table)`` with ``examples``.
    """
    check_int("n_eval", n_eval)
    check_int("batch", batch)
    ids, labels = test[0][:n_eval], test[1][:n_eval]
    order = np.argsort([len(x) for x in ids], kind="stable")
    model.eval()
    loss, correct = 0.0, 0
    per_loss, per_correct = np.zeros(len(order)), np.zeros(len(order), dtype=int)
    for k in range(0, len(order), batch):
        idx = order[k:k + batch]
        logits = model(*collate([ids[i] for i in idx], getattr(model, "pad_id", 0)))
        y = torch.as_tensor(labels[idx])
        loss += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(-1) == y).sum())
        if examples:
            per_loss[idx] = torch.nn.functional.cross_entropy(logits, y, reduction="none").double().numpy()
            per_correct[idx] = (logits.argmax(-1) == y).numpy()
    model.train()
    if not examples:
        return loss / len(order), correct / len(order)
    table = pd.DataFrame({"example": np.arange(len(order)), "label": np.asarray(labels, dtype=int),
                          "correct": per_correct, "loss": per_loss})
    return loss / len(order), correct / len(order), table


def _lora_adapters(peft_model, init: str, even_rank: bool) -> list[tuple[torch.nn.Module, str]]:
    """(module, adapter) of every active LoRA adapter, after checking that :func:`apply_init` can set each."""
    if not isinstance(peft_model, torch.nn.Module):
        raise TypeError(f"peft_model must be a torch.nn.Module wrapped by peft.get_peft_model, got "
                        f"{peft_model!r}")
    mods = lora_modules(peft_model)
    if not mods:
        raise ValueError(f"peft_model has no PEFT LoRA layer: wrap the {type(peft_model).__name__} with "
                         "peft.get_peft_model first")
    out = []
    for name, mod in mods:
        base = mod.get_base_layer()
        if not isinstance(base, torch.nn.Linear):
            raise TypeError(f"apply_init supports LoRA on torch.nn.Linear layers only; module {name!r} wraps "
                            f"{type(base).__name__!r}: leave it out of the LoRA targets")
        for adapter in mod.active_adapters:
            if adapter not in mod.lora_A or getattr(mod, "use_dora", {}).get(adapter, False):
                raise ValueError(f"module {name!r}: adapter {adapter!r} is not a plain LoRA A/B pair (DoRA "
                                 "or another variant); apply_init cannot set it")
            if even_rank and mod.lora_A[adapter].out_features % 2:
                raise ValueError(f"rank must be even with init {init!r}, got rank="
                                 f"{mod.lora_A[adapter].out_features} in module {name!r}")
            out.append((mod, adapter))
    return out


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
