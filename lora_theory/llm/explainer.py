"""What the γ-calculus says about a real PEFT LoRA set-up: ``explain(config_or_model)`` (docs/theory.md §13).

It reads r, ``lora_alpha``, ``use_rslora``, ``init_lora_weights`` (and, from a model, the widths of the
adapted modules and the adapters' actual weights) from a PEFT ``LoraConfig``, a PEFT-wrapped model, a
saved ``adapter_config.json`` (or its folder) or the dict inside it, and says: the init class, the
effective multiplier s, the predicted maximal learning rate as a law in width, rank and α
(:func:`lora_theory.theory.lr_law`), how η should move when r or the width changes, and warnings
(α/r damping or amplification, a config that disagrees with the weights, per-module rank/α overrides).

Glossary: n width (fan-in of the adapted module), r rank, α ``lora_alpha``, s the multiplier, η learning rate.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["PEFT_INITS", "Explanation", "explain"]

# PEFT init_lora_weights → (init class, the registry init whose exponents the calculus reads, or None)
PEFT_INITS = {True: ("A-type (B = 0, A Kaiming-uniform)", "peft_true"),
              "gaussian": ("A-type (B = 0, A ~ N(0, 1/r²))", "peft_gaussian"),
              False: ("both non-zero (A, B random: the model starts off the pretrained one)", "peft_false"),
              "orthogonal": ("both non-zero (orthogonal halves, B·A = 0)", "peft_orthogonal"),
              "mica": ("B-type, data-dependent (A = 0, B frozen singular vectors of W)", None)}
DATA_DEPENDENT = ("pissa", "olora", "corda", "eva", "loftq", "lora_ga")  # SVD/activation-based: not derived
WEIGHT_INITS = {(True, False): ("A-type (B = 0, A random)", "A"),  # (B all zero, A all zero) → weights say
                (False, True): ("B-type (A = 0, B random)", "B")}


@dataclass(frozen=True)
class Explanation:
    """The result of :func:`explain`; ``str()`` gives the text."""

    rank: int
    alpha: float
    use_rslora: bool
    multiplier: float  # s = α/r or α/√r
    init_class: str
    init: str | None  # the registry init the calculus used (None: not covered)
    widths: tuple  # distinct fan-ins of the adapted modules (empty if unknown)
    law: str | None
    exponents: tuple | None  # (width, rank, α) exponents of η_max binding at (max width, r, α)
    warnings: tuple = field(default=())
    text: str = ""

    def __str__(self) -> str:
        return self.text


def explain(config_or_model, width: int | None = None) -> Explanation:
    """Explain a PEFT LoRA set-up with the γ-calculus in width and rank.

    Args:
        config_or_model: a ``peft.LoraConfig``, a model holding PEFT LoRA layers (e.g. a ``PeftModel`` or
            :func:`lora_theory.llm.build_model`'s classifier), a path to ``adapter_config.json`` or its
            folder, or the dict it holds.
        width: the width n to evaluate the law at when no model gives it (e.g. 4096 for a 7B model).

    Returns:
        An :class:`Explanation` (its ``str`` is the full text).

    >>> e = explain({"r": 64, "lora_alpha": 8, "init_lora_weights": True}, width=4096)
    >>> e.multiplier, e.init, e.law
    (0.125, 'peft_true', 'Θ(n^(-1/2)·α^(-1/2))')
    >>> any("damps" in w for w in e.warnings)
    True
    """
    from ..theory import lr_law  # sympy: imported when used

    cfg, layers = _read(config_or_model)
    r, alpha = int(cfg.get("r") or 8), float(cfg.get("lora_alpha") or 8)  # PEFT's defaults
    rslora = bool(cfg.get("use_rslora", False))
    if r < 1 or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"r must be >= 1 and lora_alpha > 0, got r={r!r}, lora_alpha={alpha!r}")
    scaling = "rslora" if rslora else "lora"
    s = alpha / (math.sqrt(r) if rslora else r)
    init_class, init, warnings = _init_class(cfg.get("init_lora_weights", True), layers)
    widths = tuple(sorted({n for n, _ in layers})) or ((width,) if width else ())
    where = f" Width n = {', '.join(map(str, widths))} ({'the adapted fan-ins' if layers else 'given'})."
    lines = [f"LoRA rank r = {r}, lora_alpha = {alpha:g}, {'rsLoRA' if rslora else 'standard'} scaling: "
             f"multiplier s = α/{'√r' if rslora else 'r'} = {s:.4g}.",
             f"Init: {init_class}." + (where if widths else "")]
    law = exps = None
    if init is None:
        lines.append("The γ-calculus does not cover this init (data-dependent or unknown): no η prediction.")
    else:
        law = lr_law(init, scaling)
        n = max(widths) if widths else None
        exps = law.binding(n, r, alpha) if n else (law.pieces[0] if len(law.pieces) == 1 else None)
        lines.append(f"Predicted maximal stable η (Adam, docs/theory.md §13): η_max = {law}.")
        if exps is not None:
            w, k, a = (float(e) for e in exps)
            lines.append(f"Here η ∝ n^({exps[0]})·r^({exps[1]})·α^({exps[2]}): doubling r multiplies η by "
                         f"{2 ** k:.3g}, doubling the width by {2 ** w:.3g}, doubling α by {2 ** a:.3g}.")
        else:
            lines.append("Which constraint binds depends on the width: pass width=n.")
    warnings += _multiplier_warnings(s, r, alpha, rslora, law, exps)
    for key in ("rank_pattern", "alpha_pattern"):
        if cfg.get(key):
            warnings.append(f"{key} overrides r or α on some modules ({cfg[key]}); this explanation uses the "
                            "defaults.")
    text = "\n".join(lines + [f"Warning: {w}" for w in warnings])
    return Explanation(r, alpha, rslora, s, init_class, init, widths, None if law is None else str(law),
                       None if exps is None else tuple(exps), tuple(warnings), text)


# ----------------------------------------------------------------------------------------- private

def _read(obj) -> tuple[dict, list[tuple[int, tuple[bool, bool]]]]:
    """(config dict, [(fan-in, (B zero, A zero)) per LoRA layer]) from any accepted input."""
    if isinstance(obj, (str, Path)):
        path = Path(obj)
        path = path / "adapter_config.json" if path.is_dir() else path
        if not path.is_file():
            raise ValueError("config_or_model must be an existing adapter_config.json or its folder, "
                             f"got {obj!r}")
        return json.loads(path.read_text()), []
    if isinstance(obj, dict):
        return obj, []
    if hasattr(obj, "lora_alpha") and hasattr(obj, "r"):  # a LoraConfig (duck-typed: peft is imported lazily)
        return {k: getattr(obj, k, None) for k in ("r", "lora_alpha", "use_rslora", "init_lora_weights",
                                                  "rank_pattern", "alpha_pattern")}, []
    if hasattr(obj, "modules"):
        configs = [m.peft_config for m in obj.modules() if isinstance(getattr(m, "peft_config", None), dict)]
        if not configs:
            raise ValueError(f"config_or_model holds no PEFT LoRA adapter: {type(obj).__name__}")
        name, cfg = next(iter(configs[0].items()))
        return _read(cfg)[0], _layers(obj, name)
    raise ValueError("config_or_model must be a peft LoraConfig, a PEFT model, a path to adapter_config.json "
                     f"or a dict, got {type(obj).__name__}")


def _layers(model, adapter: str) -> list:
    from .model import lora_modules

    out = []
    for _, mod in lora_modules(model):
        if adapter in mod.lora_A:
            A, B = mod.lora_A[adapter].weight, mod.lora_B[adapter].weight  # (r, n_in), (n_out, r)
            out.append((int(A.shape[1]), (bool((B == 0).all()), bool((A == 0).all()))))
    return out


def _init_class(value, layers) -> tuple[str, str | None, list[str]]:
    if isinstance(value, str) and value.lower().startswith(DATA_DEPENDENT):
        cls, init = f"data-dependent ({value}: A, B from an SVD or activations of the pretrained model)", None
    elif value in PEFT_INITS or (isinstance(value, str) and value.lower() in PEFT_INITS):
        cls, init = PEFT_INITS[value.lower() if isinstance(value, str) else value]
    else:
        cls, init = f"unknown ({value!r})", None
    zeros = {z for _, z in layers}
    if len(zeros) == 1 and next(iter(zeros)) in WEIGHT_INITS:
        seen, seen_init = WEIGHT_INITS[next(iter(zeros))]
        if seen_init != {"peft_true": "A", "peft_gaussian": "A"}.get(init, init):
            return f"{seen}, read off the weights", seen_init, [
                f"the config says init_lora_weights={value!r} ({cls}) but the weights are {seen}: using the "
                "weights"]
    return cls, init, []


def _multiplier_warnings(s, r, alpha, rslora, law, exps) -> list[str]:
    out = []
    a = float(exps[2]) if exps is not None else None
    effect = (f" Under Adam the maximal stable η scales as α^({exps[2]}) here, so an η tuned at s = 1 is "
              f"{(1 / s) ** -a:.3g}× below the maximum at this α" if a else "")
    if s < 0.5:
        out.append(f"α/{'√r' if rslora else 'r'} = {s:.3g} damps the adapter's output {1 / s:.3g}-fold "
                   f"(r = {r}, α = {alpha:g}).{effect}; raise α (α = r or 2r is common) or η.")
    elif s > 4:
        out.append(f"s = {s:.3g} amplifies the adapter {s:.3g}-fold: the stable η is smaller than at s = 1.")
    return out
