"""Resumable, cached sweeps (kill -9 and resume) and execution on other executors (process pool, Dask)."""

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import pandas as pd
import pytest

from lora_theory import cache, simulate

GRID = dict(widths=[64, 128, 256], lrs=[0.5, 1.0], inits=["A", "B"], seeds=[0, 1], steps=3)


def test_cache_roundtrip_computes_nothing_the_second_time(tmp_path, caplog):
    first = simulate(**GRID, cache_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="lora_theory"):
        second = simulate(**GRID, cache_dir=tmp_path)
    assert "6 units, 6 cached, 0 to compute" in caplog.text
    pd.testing.assert_frame_equal(first, second)
    # a different configuration does not hit the cache
    with caplog.at_level(logging.INFO, logger="lora_theory"):
        simulate(**{**GRID, "steps": 4}, cache_dir=tmp_path)
    assert "6 units, 0 cached, 6 to compute" in caplog.text


_KILLED_SWEEP = """
import os, signal, sys, torch
torch.set_num_threads(1)
import lora_theory
sim = sys.modules["lora_theory.simulate"]  # the module (lora_theory.simulate is the function)
calls, real = [0], sim.run_unit

def run_unit(unit):  # SIGKILL this process when unit number {kill_at} starts (or mid-write: see below)
    calls[0] += 1
    if calls[0] == {kill_at} and not {mid_write}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(unit)

# die between fsync and rename of the record of unit {kill_at} (a subprocess: patch os itself)
if {mid_write}:
    real_replace = os.replace
    def replace(src, dst):
        if calls[0] == {kill_at}:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst)
    os.replace = replace
sim.run_unit = run_unit
sim.simulate(**{grid}, cache_dir={cache!r}, progress=False)
"""
KILL_GRID = dict(widths=[64, 128, 256, 512], lrs=[0.5, 1.0, 2.0], inits=["A", "B", "AB"], seeds=[0, 1],
                 steps=20)


@pytest.mark.parametrize("mid_write", [False, True], ids=["between-units", "between-fsync-and-rename"])
def test_sigkill_then_resume_recomputes_only_unfinished_units(tmp_path, caplog, mid_write):
    """A sweep killed with SIGKILL (deterministically, as its 4th unit starts or while its record is being
    renamed into place) leaves only complete records; the rerun computes exactly the other units."""
    script = _KILLED_SWEEP.format(kill_at=4, mid_write=mid_write, grid=KILL_GRID, cache=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], timeout=300)
    assert proc.returncode == -signal.SIGKILL
    done = sorted(tmp_path.glob("*.pkl"))
    assert len(done) == 3, "exactly the three finished units are on disk"
    assert len(list(tmp_path.glob("*.part"))) == (1 if mid_write else 0)  # the killed write's temporary
    stamps = {p: p.stat().st_mtime_ns for p in done}
    with caplog.at_level(logging.INFO, logger="lora_theory"):
        df = simulate(**KILL_GRID, cache_dir=tmp_path, progress=False)
    assert "12 units, 3 cached, 9 to compute" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in done} == stamps  # finished units were not rewritten
    assert len(list(tmp_path.glob("*.pkl"))) == 12 and not list(tmp_path.glob("*.part"))
    # the same numbers as one clean run
    pd.testing.assert_frame_equal(df, simulate(**KILL_GRID, progress=False))


def test_temporaries_are_not_records_and_stale_ones_are_removed(tmp_path, caplog):
    """A kill between writing and renaming leaves a temporary file: it is never read as a record,
    and the next sweep deletes it once its writer is dead (a live writer's file is kept)."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{cache._TMP_PREFIX}-{dead.pid}-abc.part"
    live = tmp_path / f"{cache._TMP_PREFIX}-{os.getpid()}-abc.part"
    for path in (stale, live):
        path.write_bytes(b"partial")
    with caplog.at_level(logging.INFO, logger="lora_theory"):
        simulate(**GRID, cache_dir=tmp_path)
    assert "6 units, 0 cached, 6 to compute" in caplog.text
    assert not stale.exists() and live.exists()
    assert len(list(tmp_path.glob("*.pkl"))) == 6


def test_process_pool_gives_the_same_numbers():
    serial = simulate(**GRID)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        parallel = simulate(**GRID, executor=pool, threads=1)
    pd.testing.assert_frame_equal(serial, parallel)


def test_dask_localcluster_executor_gives_the_same_numbers(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    serial = simulate(**GRID)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        on_dask = simulate(**GRID, executor=client.get_executor(), cache_dir=tmp_path, threads=1)
    pd.testing.assert_frame_equal(serial, on_dask)
    assert len(list(tmp_path.glob("*.pkl"))) == 6
