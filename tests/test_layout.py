"""The package's structure, checked: a layered import graph, no private names across modules, size caps,
and the public API of each package."""

import ast
from pathlib import Path

import pytest

import lora_theory

ROOT = Path(lora_theory.__file__).parent
MODULES = sorted(p for p in ROOT.rglob("*.py"))
# each module may import only from modules of its own layer or below (docs: README, "Design")
LAYERS = [
    {"checks"},
    {"config", "inits"},
    {"models", "optim", "stats"},
    {"engine", "reference", "grid"},
    {"cache"},
    {"theory.algebra"}, {"theory.recursion"}, {"theory.solve"}, {"theory.law"}, {"theory.toy"},
    {"theory.writeup"},
    {"theory"},
    {"limit.meanfield"}, {"limit.run"},  # the n → ∞ engine: simulate routes width math.inf to it
    {"simulate"},
    {"llm.weights"}, {"llm.data"}, {"llm.config", "llm.model"}, {"llm.train", "llm.verdict"},
    {"llm.sweep", "llm.width"}, {"llm.explainer"},
    {"llm", "llm.__main__"},
    {"fit"}, {"analysis"}, {"plotting"},
    {"limit.convergence"},  # the matrix (validate) checks its disagreements against the limit
    {"experiments", "calibrate", "validate", "transfer"},
    {"limit.report", "limit"}, {"figures"},
    {"bench"}, {"commands"}, {"cli"}, {"__init__", "__main__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path):
    """(module imported, names imported) for every intra-package import of ``path``."""
    pkg = _name(path).split(".")[:-1] if path.name != "__init__.py" else _name(path).split(".")
    if _name(path) == "__init__":
        pkg = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg[:len(pkg) - (node.level - 1)] if node.level > 1 else pkg
            target = ".".join(base + ([node.module] if node.module else []))
            names = [a.name for a in node.names]
            if not node.module:  # from . import x: x is a module
                for n in names:
                    yield ".".join(base + [n]), []
            else:
                yield target, names


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_imports_go_down_the_layers_and_never_take_private_names(path):
    me = _name(path)
    assert me in RANK, f"{me} is not placed in a layer of tests/test_layout.py (and the README's design)"
    for target, names in _imports(path):
        assert target in RANK, f"{me} imports unknown module {target}"
        assert RANK[target] <= RANK[me], f"{me} (layer {RANK[me]}) imports {target} (layer {RANK[target]})"
        private = [n for n in names if n.startswith("_")]
        assert not private, f"{me} imports private names {private} from {target}"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_modules_stay_under_the_size_cap(path):
    lines = len(path.read_text().splitlines())
    assert lines <= 320, f"{_name(path)} has {lines} lines (cap ~300)"


@pytest.mark.parametrize("package", ["lora_theory", "lora_theory.theory"])
def test_public_api_is_curated_and_importable(package):
    import importlib

    mod = importlib.import_module(package)
    assert mod.__all__ and all(not n.startswith("_") for n in mod.__all__)
    missing = [n for n in mod.__all__ if not hasattr(mod, n)]
    assert not missing, f"{package}.__all__ names missing attributes {missing}"


def test_no_citation_of_files_outside_the_repository():
    offenders = [str(p.relative_to(ROOT.parent)) for p in MODULES if "PAPER.md" in p.read_text()]
    assert not offenders, f"cite docs/theory.md, not PAPER.md: {offenders}"
