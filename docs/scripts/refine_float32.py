"""Fig. 2 refinement in float32 vs float64: one cell (Init[A], n = 4096, 9 η on the 2^{1/4} grid,
10 seeds, 200 steps).

    OMP_NUM_THREADS=1 python docs/scripts/refine_float32.py
"""
import time

import numpy as np

from lora_theory import simulate
from lora_theory.analysis import interpolated_optimal_lr
from lora_theory.config import ModelConfig, TrainConfig
from lora_theory.experiments import fine_lr_grid

out = {}
for dt in ("float32", "float64"):
    t = time.perf_counter()
    df = simulate(widths=[4096], lrs=fine_lr_grid(-8.5, 0.25, -4, 4), lr_exponent=None, inits=["A"],
                  seeds=list(range(10)), model=ModelConfig(setting="toy", n_train=256, readout="sp"),
                  train_cfg=TrainConfig(steps=200, record_every=20, dtype=dt), progress=False)
    out[dt] = (time.perf_counter() - t, interpolated_optimal_lr(df))
    print(dt, round(out[dt][0], 1), "s", flush=True)
a, b = out["float32"][1], out["float64"][1]
m = a.merge(b, on=["init", "width", "seed"], suffixes=("32", "64"))
print("max |log2 opt32 - log2 opt64|:", float(np.abs(np.log2(m.lr_opt32 / m.lr_opt64)).max()))
print("same argmin:", bool((m.lr_argmin32 == m.lr_argmin64).all()))
