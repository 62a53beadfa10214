"""Resumable, cached sweeps (kill -9 and resume) and execution on other executors (process pool, Dask)."""

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor

import pandas as pd
import pytest

from lora_theory import simulate, sweep

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


def test_sigkill_then_resume_recomputes_only_unfinished_units(tmp_path, caplog):
    """A sweep killed with SIGKILL mid-run leaves only complete records; the rerun finishes the rest."""
    script = textwrap.dedent(f"""
        import torch; torch.set_num_threads(1)
        from lora_theory import simulate
        simulate(widths=[64, 128, 256, 512], lrs=[0.5, 1.0, 2.0], inits=["A", "B", "AB"],
                 seeds=[0, 1], steps=200, cache_dir={str(tmp_path)!r}, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 120
    while len(list(tmp_path.glob("*.pkl"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(tmp_path.glob("*.pkl"))
    assert 3 <= len(done) < 12, "the sweep must be killed part-way"
    stamps = {p: p.stat().st_mtime_ns for p in done}
    for p in done:  # every record on disk is complete and readable
        assert len(pd.read_pickle(p)) == 6 * 2 * 201  # (3 lrs × 2 exponents) × 2 seeds × 201 steps
    with caplog.at_level(logging.INFO, logger="lora_theory"):
        df = simulate(widths=[64, 128, 256, 512], lrs=[0.5, 1.0, 2.0], inits=["A", "B", "AB"],
                      seeds=[0, 1], steps=200, cache_dir=tmp_path, progress=False)
    assert f"12 units, {len(done)} cached, {12 - len(done)} to compute" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in done} == stamps  # finished units were not rewritten
    assert len(list(tmp_path.glob("*.pkl"))) == 12 and not list(tmp_path.glob(".tmp-*"))
    assert len(df) == 12 * 6 * 2 * 201


def test_temporaries_are_not_records_and_stale_ones_are_removed(tmp_path, caplog):
    """A kill between writing and renaming leaves a temporary file: it is never read as a record,
    and the next sweep deletes it once its writer is dead (a live writer's file is kept)."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{sweep._TMP_PREFIX}-{dead.pid}-abc.part"
    live = tmp_path / f"{sweep._TMP_PREFIX}-{os.getpid()}-abc.part"
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
