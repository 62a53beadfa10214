"""Benchmark: the batched engine against a per-configuration ``nn.Module`` + ``torch.optim`` loop.

``run_bench()`` measures the machine (float64 matmul peak and stream bandwidth), then for each case
trains the same grid two ways, checks that both give the same final losses, and reports
configurations·steps per second, their ratio, and the engine's fractions of the roofline. A last check
runs a toy sweep at n = 2^15 with 1000 training points in a fresh process and reports its peak memory.

Roofline: the least work the *computation* needs (not this implementation's), per configuration and step,
with N samples, width n, rank r, b bytes per float and L configurations per seed:

* flops F = 10·N·n·r + e·N·n + 13·2·r·n: five rank-r products, each 2·N·n·r (Z_A = Z Aᵀ, s·Z_A Bᵀ, G B,
  Gᵀ Z_A and (G B)ᵀ Z: A and B differ per configuration, so none is shared), the elementwise work on the
  (N, n) pre-activation (e = 5 in the toy: bias add, ReLU, readout multiply-add, mask; 3 in the layer:
  residual, square, sum) and Adam's ≈ 13 flops per entry of A and B;
* bytes Q = (m·N·n / L + 16·r·n)·b: the frozen (N, n) tensors, m of them (toy: Z and the pre-activation
  base; layer: also the targets), are read once per step for the L configurations of a seed; everything
  (N, n) that belongs to one configuration can stay in cache (the toy's tiles do); A and B with Adam's m and
  v cost 8 accesses per entry (read weight, gradient, m, v; write weight, m, v; the gradient's own write).

Compute roofline fraction = (F / matmul peak) / measured time; memory fraction = (Q / stream bandwidth) /
measured time; ``roofline_fraction`` is the larger (the binding bound). The bandwidth is DRAM's: a working
set that fits in the last-level cache (the layer's weights and Adam states at n ≤ 1024) can beat it.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from .config import ModelConfig, TrainConfig
from .inits import sample_init
from .models import init_generator
from .reference import reference_run, seed_slice
from .simulate import LearningRate, Unit, frozen_parts, run_unit


@dataclass(frozen=True)
class Case:
    """One benchmark grid: ``len(lrs) × seeds`` configurations of one width."""

    name: str
    setting: str
    width: int
    n_train: int
    steps: int
    lrs: tuple[float, ...] = tuple(2.0 ** -k for k in range(6, 14))  # 8 learning rates
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    rank: int = 4
    init: str = "A"


CASES = {
    "full": (Case("layer_n256", "layer", 256, 1, 50), Case("layer_n1024", "layer", 1024, 1, 50),
             Case("toy_n1024", "toy", 1024, 256, 50), Case("toy_n4096", "toy", 4096, 256, 20)),
    "quick": (Case("layer_n256", "layer", 256, 1, 10), Case("toy_n256", "toy", 256, 64, 10),
              Case("toy_n1024", "toy", 1024, 64, 5)),
}

HEADLINE = {"full": "toy_n1024", "quick": "toy_n256"}  # the case behind the top-level speed keys


def machine_peaks(threads: int) -> dict[str, float]:
    """Measured float64 matmul peak (GFLOP/s) and stream bandwidth (GB/s, read + write of 256 MB)."""
    torch.set_num_threads(threads)
    a = torch.randn(2048, 2048, dtype=torch.float64)
    flops = 2 * 2048 ** 3 / _best(lambda: a @ a, 3)
    x, y = torch.randn(2 ** 25, dtype=torch.float64), torch.empty(2 ** 25, dtype=torch.float64)
    bandwidth = 2 * x.numel() * 8 / _best(lambda: torch.add(x, 1.0, out=y), 5)
    return {"matmul_gflops": flops / 1e9, "bandwidth_gbs": bandwidth / 1e9}


def bench_case(case: Case, peaks: dict[str, float], threads: int, repeats: int = 3) -> dict:
    """Time the engine and the per-configuration loop on one case (best of ``repeats``); check they agree."""
    torch.set_num_threads(threads)
    model = ModelConfig(setting=case.setting, n_train=case.n_train, n_test=16)
    cfg = TrainConfig(steps=case.steps, record_every=case.steps)
    unit = Unit(model, cfg, case.width, case.rank, case.init, "adam", case.seeds,
                tuple(LearningRate(lr, None) for lr in case.lrs))
    fz = frozen_parts(model, case.width, case.seeds, cfg.dtype, cfg.device)  # built once, outside the timings
    # warm both up (first calls of autograd, torch.optim and the kernels are slow; a cold loop
    # would inflate the speed-up, most of all on short cases)
    run_unit(replace(unit, train=replace(cfg, steps=1, record_every=1)))
    _loop(replace(case, lrs=case.lrs[:1], seeds=case.seeds[:1], steps=2), fz)
    (t_engine, df), (t_loop, loop_final) = (_timed(fn, repeats) for fn in (lambda: run_unit(unit),
                                                                          lambda: _loop(case, fz)))
    engine_final = df[df.step == case.steps].sort_values(["lr", "seed"])["loss"].to_numpy()
    n_cfg = len(case.lrs) * len(case.seeds)
    work = n_cfg * case.steps
    flops, traffic = minimum_work(case)  # per configuration-step
    t_flops = flops / (peaks["matmul_gflops"] * 1e9) * work  # seconds at the matmul peak
    t_bytes = traffic / (peaks["bandwidth_gbs"] * 1e9) * work  # seconds at the stream bandwidth
    return {"case": case.name, "setting": case.setting, "width": case.width, "n_train": case.n_train,
            "configs": n_cfg, "steps": case.steps,
            "engine_config_steps_per_s": work / t_engine, "loop_config_steps_per_s": work / t_loop,
            "speedup": t_loop / t_engine, "min_flops": flops, "min_bytes": traffic,
            "compute_roofline_fraction": t_flops / t_engine, "memory_roofline_fraction": t_bytes / t_engine,
            "roofline_fraction": max(t_flops, t_bytes) / t_engine,
            "max_rel_diff_final_loss": float(np.max(np.abs(engine_final - loop_final) / np.abs(loop_final))),
            "same_numbers": bool(np.allclose(engine_final, loop_final, rtol=1e-8, atol=0))}


def memory_check(width: int = 2 ** 15, n_train: int = 1000, configs: int = 16, steps: int = 3,
                 max_batch_bytes: int = 2 ** 31, threads: int = 1) -> dict:
    """Peak resident memory of a toy sweep at ``width`` with ``n_train`` samples, in a fresh process.

    The sweep (``configs`` learning rates × 2 seeds) is chunked by ``max_batch_bytes``; the child's
    peak RSS (``ru_maxrss``) is what the machine must provide.
    """
    code = (f"import torch; torch.set_num_threads({threads}); from lora_theory import simulate, ModelConfig; "
            f"simulate(widths={width}, lrs=[2.0 ** -k for k in range(4, {4 + configs // 2})], "
            f"lr_exponent=None, "
            f"seeds=[0, 1], inits='A', steps={steps}, model=ModelConfig(setting='toy', n_train={n_train}), "
            f"max_batch_bytes={max_batch_bytes}, progress=False); import resource; "
            f"print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    peak_kb = int(out.split()[-1])  # the child's own peak, in KiB on Linux
    return {"width": width, "n_train": n_train, "configs": configs, "steps": steps,
            "max_batch_bytes": max_batch_bytes, "peak_rss_gb": peak_kb / 2 ** 20,
            "seconds": time.perf_counter() - t0}


def run_bench(quick: bool = False, threads: int | None = None) -> dict:
    """Machine peaks plus every case; the headline keys come from the speed-up and roofline cases.

    Returns a dict with ``engine_config_steps_per_s``, ``loop_config_steps_per_s`` and ``speedup`` of
    the toy case at n = 1024 (quick: 256), ``roofline_fraction`` of the widest toy case, per-case
    ``speedup_by_case`` and ``compute_roofline_by_case``, ``cases`` (every case) and ``machine``.
    """
    threads = threads or torch.get_num_threads()
    peaks = machine_peaks(threads)
    cases = [bench_case(c, peaks, threads, repeats=2 if quick else 3)
             for c in CASES["quick" if quick else "full"]]
    head = next(c for c in cases if c["case"] == HEADLINE["quick" if quick else "full"])
    wide = cases[-1]
    memory = memory_check(width=2 ** 10, n_train=100, configs=4, steps=2) if quick else memory_check()
    limit = limit_cost(steps=3 if quick else 10, threads=threads)
    return {"memory": memory, "limit": limit, "engine_config_steps_per_s": head["engine_config_steps_per_s"],
            "loop_config_steps_per_s": head["loop_config_steps_per_s"], "speedup": head["speedup"],
            "roofline_fraction": wide["roofline_fraction"],
            "speedup_by_case": {c["case"]: c["speedup"] for c in cases},
            "compute_roofline_by_case": {c["case"]: c["compute_roofline_fraction"] for c in cases},
            "cases": cases,
            "machine": {**peaks, "threads": threads, "torch": torch.__version__,
                        "processor": platform.processor() or platform.machine()}}


def limit_cost(width: int = 2 ** 14, steps: int = 10, seeds=(0, 1, 2, 3), threads: int = 1) -> dict:
    """Seconds of the n → ∞ limit (``lora_theory.limit``; particles, not n, set its cost) next to finite
    ``width``, same grid: layer setting, Init[A], c = −1/2, Adam, 8 constants C × ``seeds`` (best of 2)."""
    torch.set_num_threads(threads)
    cfg = TrainConfig(steps=steps, record_every=steps)
    unit = Unit(ModelConfig(), cfg, width, 4, "A", "adam", tuple(seeds),
                tuple(LearningRate(2.0 ** -k, -0.5) for k in range(-1, 7)))
    run_unit(replace(unit, width=math.inf, train=replace(cfg, steps=1, record_every=1)))  # warm-up, imports
    t_finite, t_limit = (_timed(lambda: run_unit(replace(unit, width=w)), 2)[0] for w in (width, math.inf))
    return {"width": width, "steps": steps, "configs": 8 * len(seeds), "finite_seconds": t_finite,
            "limit_seconds": t_limit}


def format_report(result: dict) -> str:
    """A plain-text table of a :func:`run_bench` result."""
    m = result["machine"]
    lines = [f"machine: {m['threads']} threads, float64 matmul peak {m['matmul_gflops']:.1f} GFLOP/s, "
             f"stream bandwidth {m['bandwidth_gbs']:.1f} GB/s, torch {m['torch']}",
             f"{'case':<12} {'configs':>7} {'steps':>5} {'engine cfg·steps/s':>19} {'loop cfg·steps/s':>17} "
             f"{'speedup':>8} {'compute':>8} {'memory':>7} {'same':>5}"]
    mem = result["memory"]
    lines.insert(1, f"memory: toy n={mem['width']}, {mem['n_train']} training points, "
                    f"{mem['configs']} configurations: "
                    f"peak RSS {mem['peak_rss_gb']:.2f} GB ({mem['seconds']:.0f} s, batches <= "
                    f"{mem['max_batch_bytes'] / 2 ** 30:.0f} GiB)")
    lim = result["limit"]
    lines.insert(2, f"limit: n = ∞ took {lim['limit_seconds']:.2f} s against {lim['finite_seconds']:.2f} s "
                    f"at n = {lim['width']} ({lim['configs']} configurations, {lim['steps']} steps, layer, "
                    "Init[A])")
    for c in result["cases"]:
        lines.append(f"{c['case']:<12} {c['configs']:>7} {c['steps']:>5} "
                     f"{c['engine_config_steps_per_s']:>19.1f} "
                     f"{c['loop_config_steps_per_s']:>17.1f} {c['speedup']:>7.1f}x "
                     f"{c['compute_roofline_fraction']:>8.0%} {c['memory_roofline_fraction']:>7.0%} "
                     f"{str(c['same_numbers']):>5}")
    return "\n".join(lines)


def main(quick: bool = False, as_json: bool = False, threads: int | None = None) -> dict:
    result = run_bench(quick=quick, threads=threads)
    print(json.dumps(result, indent=2) if as_json else format_report(result))
    return result


def minimum_work(case: Case, itemsize: int = 8) -> tuple[float, float]:
    """(flops, bytes) per configuration-step that the computation needs (module docstring), at ``itemsize``.

    >>> minimum_work(Case("t", "toy", 1024, 256, 1))  # 10·N·n·r + 5·N·n + 26·r·n; (2·N·n/8 + 16·r·n)·8
    (11902976.0, 1048576.0)
    """
    N, n, r, L = case.n_train, case.width, case.rank, len(case.lrs)
    elementwise, frozen = (5, 2) if case.setting == "toy" else (3, 3)
    flops = 10 * N * n * r + elementwise * N * n + 13 * 2 * r * n
    return float(flops), float((frozen * N * n / L + 16 * r * n) * itemsize)


def _loop(case: Case, fz) -> np.ndarray:
    """Final loss of each configuration trained alone (how such loops are usually written)."""
    finals = {}
    for lr in case.lrs:
        for i, seed in enumerate(case.seeds):
            g = init_generator(seed, case.width, case.rank)
            A0, B0 = sample_init(case.init, case.width, case.rank, g)
            out = reference_run(case.setting, seed_slice(fz, i), A0, B0, 1.0, "adam", lr, lr, case.steps)
            finals[lr, seed] = out["loss"][-1]
    return np.array([finals[k] for k in sorted(finals)])  # ordered by (lr, seed), like the engine's rows


def _timed(fn, repeats: int):
    """(best wall time of ``repeats`` calls, the last result): the minimum is the least noisy estimate."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def _best(fn, reps: int) -> float:
    """Best of ``reps`` timed calls after one warm-up call."""
    fn()
    return _timed(fn, reps)[0]
