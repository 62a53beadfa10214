"""Run tasks once: a domain-free executor with an on-disk, versioned, crash-safe cache.

``execute(tasks, fn, cache_dir, executor)`` returns ``[fn(t) for t in tasks]``, but

* a task whose record is already in ``cache_dir`` is read back, not recomputed (resumable sweeps);
* each finished task is written by the process that computed it, to a temporary file that is then
  renamed, so a reader never sees a partial record and a kill loses only unfinished tasks;
* a record that cannot be read, or whose key, description or content does not match its task, is
  named in a warning, moved aside (``*.bad``) and recomputed: it is never merged;
* tasks run on any ``concurrent.futures.Executor`` (a process pool, Dask's ``client.get_executor()``;
  the cache directory must then be visible to the workers).

A task is any picklable object with a ``key`` (a file-name-safe string that changes whenever the
numbers would) and a ``description`` (a string stored with the record and compared on load). Records are
``<key>.pkl`` (pickle codec, fast) or ``<key>.json`` (json codec: text, exact floats, for committed
results). Both the simulator (:mod:`lora_theory.simulate`) and the LLM sweep use this module.

Killing the parent of a process pool does not stop its workers: a worker finishes (and stores) the
task it is running, then waits, idle but alive and holding its memory, until it is killed (measured in
docs/reliability.md, which also says how to avoid it). Nothing finished is lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import pickle
import socket
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import Executor, as_completed
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import pandas as pd
from tqdm.auto import tqdm

from .checks import check_bool, check_dir, check_executor, lookup

log = logging.getLogger("lora_theory")
RECORD_FORMAT = 1  # layout of a record file (not of the numbers: tasks version those in their keys)

__all__ = ["CODECS", "Task", "execute", "exit_with_parent", "make_key", "read_all"]


class Task(Protocol):
    """What :func:`execute` needs of a task."""

    @property
    def key(self) -> str: ...

    @property
    def description(self) -> str: ...


def make_key(*parts: object) -> str:
    """32 hex digits of SHA-256 over ``repr(parts)``: the cache key of a task.

    >>> make_key("simulate", 3, (1, 2)) == make_key("simulate", 3, (1, 2)), len(make_key("x"))
    (True, 32)
    """
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def execute(tasks: Sequence[Task], fn: Callable[[Any], Any], cache_dir: str | Path | None = None,
            executor: Executor | None = None, progress: bool | None = None, codec: str = "pickle",
            validate: Callable[[Any, Any], str | None] | None = None, desc: str = "tasks") -> list:
    """``[fn(t) for t in tasks]``, reading finished tasks from ``cache_dir`` and storing new ones there.

    Args:
        tasks: the tasks, in the order of the result.
        fn: a top-level (picklable) function of one task.
        cache_dir: directory of records (created if missing); None: no cache.
        executor: where to run the tasks not cached; None runs them here, one after another.
        progress: show a progress bar (None: only on a terminal).
        codec: ``"pickle"`` or ``"json"`` (results that are a DataFrame or a dict of DataFrames).
        validate: ``validate(task, result)`` returns None, or a reason why a loaded record is unusable.
        desc: name of the work in the log and the progress bar.
    """
    lookup(CODECS, codec, "codec")
    check_executor(executor)
    check_bool("progress", progress)
    cache = _prepare(cache_dir)
    results: dict[int, Any] = {}
    todo = []
    for i, task in enumerate(tasks):
        hit = _load(cache, task, codec, validate) if cache is not None else None
        if hit is None:
            todo.append(i)
        else:
            results[i] = hit[0]
    log.info("%s: %d units, %d cached, %d to compute", desc, len(tasks), len(results), len(todo))
    bar = tqdm(total=len(todo), disable=None if progress is None else not progress, desc=desc, unit="unit")
    try:
        for i, result in _run(tasks, todo, fn, cache, codec, executor):
            results[i] = result
            bar.update()
    finally:
        bar.close()
    return [results[i] for i in range(len(tasks))]


def read_all(cache_dir: str | Path, codec: str = "pickle") -> list:
    """The results of every record in ``cache_dir`` (sorted by file name); unreadable files are skipped
    with a warning naming them."""
    suffix = lookup(CODECS, codec, "codec")[0]
    out = []
    for path in sorted(Path(cache_dir).glob(f"*{suffix}")):
        try:
            record = CODECS[codec][2](path)
            out.append(record["result"])
        except Exception as err:  # noqa: BLE001
            warnings.warn(f"cache record {str(path)!r} is unreadable ({type(err).__name__}: {err}); skipped",
                          RuntimeWarning, stacklevel=2)
    return out


# ----------------------------------------------------------------------------------------- private

def _prepare(cache_dir) -> Path | None:
    cache = check_dir("cache_dir", cache_dir)
    if cache is None:
        return None
    cache.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(cache)
    return cache


def _run(tasks, todo, fn, cache, codec, executor):
    if executor is None:
        for i in todo:
            yield i, _compute_and_store(fn, tasks[i], cache, codec)
        return
    futures = {executor.submit(_compute_and_store, fn, tasks[i], cache, codec): i for i in todo}
    for fut in as_completed(futures):
        yield futures[fut], fut.result()


def _compute_and_store(fn, task, cache: Path | None, codec: str):
    """Runs where the task runs (a worker process included), so a finished task is stored even if the
    parent dies."""
    result = fn(task)
    if cache is not None:
        _store(cache, task, result, codec)
    return result


def _path(cache: Path, task, codec: str) -> Path:
    return cache / f"{task.key}{CODECS[codec][0]}"


def _load(cache: Path, task, codec: str, validate) -> tuple[Any] | None:
    """(result,) of a usable record, else None (a bad record is moved aside with a warning)."""
    path = _path(cache, task, codec)
    if not path.exists():
        return None
    try:
        record = CODECS[codec][2](path)
        if not (isinstance(record, dict) and record.get("format") == RECORD_FORMAT):
            raise ValueError("not a record of this cache")
        if record.get("key") != task.key or record.get("description") != task.description:
            raise ValueError("it belongs to another task")
        reason = validate(task, record["result"]) if validate is not None else None
        if reason:
            raise ValueError(reason)
    except Exception as err:  # noqa: BLE001 (any unreadable file is handled the same way)
        bad = path.with_name(path.name + ".bad")
        os.replace(path, bad)
        warnings.warn(f"cache record {str(path)!r} is unusable ({type(err).__name__}: {err}); moved to "
                      f"{bad.name!r} and recomputed", RuntimeWarning, stacklevel=4)
        return None
    return (record["result"],)


def _store(cache: Path, task, result, codec: str) -> None:
    """Write to a temporary file in the same directory, then rename: readers never see a partial file."""
    record = {"format": RECORD_FORMAT, "key": task.key, "description": task.description, "result": result}
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=f"{_TMP_PREFIX}-{os.getpid()}-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            CODECS[codec][1](record, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, _path(cache, task, codec))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


_TMP_PREFIX = ".tmp-" + socket.gethostname().replace("-", "_")


def _remove_stale_temporaries(cache: Path) -> None:
    """Delete temporary files of processes of this host that no longer run (killed mid-write)."""
    for path in cache.glob(f"{_TMP_PREFIX}-*.part"):
        pid = path.name[len(_TMP_PREFIX) + 1:].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _pickle_dump(record, fh) -> None:
    pickle.dump(record, fh, protocol=pickle.HIGHEST_PROTOCOL)


def _pickle_load(path: Path):
    with open(path, "rb") as fh:
        return pickle.load(fh)


def _json_dump(record, fh) -> None:
    fh.write(json.dumps({**record, "result": _tables_to_json(record["result"])}, default=_native,
                        indent=None).encode())


def _json_load(path: Path):
    record = json.loads(path.read_text())
    if isinstance(record, dict) and "result" in record:
        record["result"] = _tables_from_json(record["result"])
    return record


def _tables_to_json(result):
    if isinstance(result, pd.DataFrame):
        return {"table": {"columns": list(result.columns), "data": result.to_numpy(object).tolist()}}
    return {name: _tables_to_json(df)["table"] for name, df in result.items()}


def _tables_from_json(obj):
    tables = {name: pd.DataFrame(t["data"], columns=t["columns"]).infer_objects() for name, t in obj.items()}
    return tables["table"] if set(tables) == {"table"} else tables


def _native(value):
    """numpy scalars → Python numbers for ``json`` (NaN and ±inf stay floats)."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a json record")


CODECS = {"pickle": (".pkl", _pickle_dump, _pickle_load), "json": (".json", _json_dump, _json_load)}


def exit_with_parent() -> None:
    """Pool initializer (``ProcessPoolExecutor(initializer=exit_with_parent)``): a daemon thread that ends
    this worker once its parent is gone and it is idle.

    An orphaned ``ProcessPoolExecutor`` worker otherwise finishes its task and then waits forever for the
    next one. The thread waits for the parent to die, then exits as soon as the worker's main thread is no
    longer running a task (only the pool's own frames on its stack), so the run in progress is finished
    and stored first.
    """
    parent = multiprocessing.parent_process()
    if parent is None:  # not a child process
        return

    def watch():
        parent.join()  # returns when the parent process has ended
        while _running_a_task():
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _running_a_task() -> bool:
    """True unless the main thread's stack holds only the pool's own frames (its loop waiting for a task,
    or sending a result that the dead parent will never read: a large one blocks on the full pipe)."""
    frame = sys._current_frames().get(threading.main_thread().ident)
    while frame is not None:
        if frame.f_code.co_name == "_process_worker":  # the pool's loop, reached through pool frames only
            return False
        if not any(f"{os.sep}{part}{os.sep}" in frame.f_code.co_filename for part in _POOL_CODE):
            return True  # a task's frame
        frame = frame.f_back
    return True


_POOL_CODE = ("multiprocessing", f"concurrent{os.sep}futures")  # where the pool's frames come from
