"""The toy's tiled step (models.ToySetting): the numbers of the dense formula it replaced, whatever the tile;
no (S, L, N, n) tensor during training; float32 runs of the same model whose exponents match float64's."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from lora_theory import ModelConfig, TrainConfig, models, simulate
from lora_theory.engine import train
from lora_theory.experiments import loss_optimal
from lora_theory.fit import FitWarning, fit_exponent
from lora_theory.inits import sample_init
from lora_theory.models import SETTINGS, init_generator, za
from lora_theory.optim import make_rule
from lora_theory.reference import reference_run, seed_slice
from lora_theory.simulate import LearningRate, Unit, run_unit
from lora_theory.validate import COMPARED, SEEDS, STEPS, WIDTHS

TOY = ModelConfig(setting="toy", n_train=32, n_test=8, teacher_width=64)
N_WIDTH, R = 48, 4


def _dense_toy(fz, ZA, B, s):
    """The toy's loss and gradients as the engine computed them before tiling: whole (S, L, N, n) tensors."""
    H = torch.relu(fz.base[:, None] + (s * ZA) @ B.transpose(-1, -2))  # (S, L, N, n)
    f = (H @ fz.w_out[:, None, :, None])[..., 0]  # (S, L, N)
    err = f - fz.target[:, None]
    se = (s * err / err.shape[2])[..., None]  # (S, L, N, 1)
    M = (H > 0).to(H.dtype)
    w = fz.w_out[:, None, :, None]  # (S, 1, n, 1)
    GB = (M @ (w * B)) * se  # (S, L, N, r)
    gA = GB.transpose(-1, -2) @ fz.Z[:, None]  # (S, L, r, n)
    gB = ((se * ZA).transpose(-1, -2) @ M).transpose(-1, -2) * w  # (S, L, n, r)
    return 0.5 * err.square().mean(dim=2), gA, gB


@pytest.mark.parametrize("rows", [1, 3, 7, 32])  # 3 and 7 leave a shorter last tile; 32 = one tile
def test_tiled_step_equals_the_dense_formula(rows, gen):
    fz = SETTINGS["toy"].build(N_WIDTH, [0, 3], TOY, torch.float64)
    A = torch.randn((2, 3, R, N_WIDTH), generator=gen, dtype=torch.float64) / N_WIDTH ** 0.5
    B = torch.randn((2, 3, N_WIDTH, R), generator=gen, dtype=torch.float64)
    ZA = za(fz.Z, A)
    work = torch.full((2, 3, rows, N_WIDTH), float("nan"), dtype=torch.float64)  # stale contents unused
    loss, ctx = SETTINGS["toy"].loss(fz, ZA, B, 1.7, out=work)
    gA, gB = SETTINGS["toy"].grads(fz, ctx, ZA, B, 1.7)
    want = _dense_toy(fz, ZA, B, 1.7)
    for got, ref in zip((loss, gA, gB), want):
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-15 * float(ref.abs().max()))
    test_loss, none = SETTINGS["toy"].loss(fz, za(fz.Z_test, A), B, 1.7, test=True, grad=False, out=work)
    assert none is None
    held_out = type(fz)(fz.Z_test, fz.base_test, fz.target_test, fz.w_out)
    dense_test = _dense_toy(held_out, za(fz.Z_test, A), B, 1.7)[0]
    torch.testing.assert_close(test_loss, dense_test, rtol=1e-12, atol=0)


def test_workspace_is_a_cache_sized_tile():
    Z = torch.empty((2, 1000, 4096), dtype=torch.float64)  # S = 2 seeds, N = 1000 samples, n = 4096
    fz = models.Frozen(Z, Z, Z[..., 0], Z[:, 0], Z[:, :8], Z[:, :8], Z[:, :8, 0])
    work = SETTINGS["toy"].workspace(fz, 16)
    assert work.shape[:2] == (2, 16) and work.shape[3] == 4096
    assert work.shape[2] == models.TILE_BYTES // (2 * 16 * 4096 * 8) < 1000
    assert work.numel() * 8 <= models.TILE_BYTES


def test_training_never_allocates_an_S_L_N_n_tensor(monkeypatch):
    """The profiler's largest single allocation during train() is far below one (S, L, N, n) tensor."""
    monkeypatch.setattr(models, "TILE_BYTES", 2 ** 20)  # 1 MiB tiles of 16 rows
    S, L, N, n = 2, 4, 256, 1024
    fz = SETTINGS["toy"].build(n, [0, 1], ModelConfig(setting="toy", n_train=N, n_test=64), torch.float64)
    A0, B0 = (torch.stack(x) for x in zip(*(sample_init("A", n, R, init_generator(s, n, R)) for s in (0, 1))))
    lr = torch.full((S, L), 1e-3, dtype=torch.float64)
    cfg = TrainConfig(steps=2)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        train(SETTINGS["toy"], fz, A0, B0, lr, lr, make_rule("adam", cfg, n), 1.0, cfg)
    largest = max(e.cpu_memory_usage for e in prof.events())
    dense = S * L * N * n * 8  # 16 MiB
    assert 0 < largest <= max(models.TILE_BYTES, S * L * N * R * 8, S * L * R * n * 8) < dense / 3


@pytest.mark.parametrize("init", ["A", "B"])
def test_small_tiles_equal_the_reference_loop(init, monkeypatch):
    """Training through simulate's path with tiles of 3 rows (10 full tiles and one of 2) equals nn.Module +
    torch.optim, one configuration at a time."""
    seeds, lrs = (0, 3), (0.05, 0.01, 0.002)
    monkeypatch.setattr(models, "TILE_BYTES", 3 * len(seeds) * len(lrs) * N_WIDTH * 8)
    cfg = TrainConfig(steps=5, lr_ratio=2.0)
    pairs = tuple(LearningRate(lr, None) for lr in lrs)
    df = run_unit(Unit(TOY, cfg, N_WIDTH, R, init, "adam", seeds, pairs))
    fz = SETTINGS["toy"].build(N_WIDTH, list(seeds), TOY, torch.float64)
    assert SETTINGS["toy"].workspace(fz, len(lrs)).shape[2] == 3
    for i, seed in enumerate(seeds):
        A0, B0 = sample_init(init, N_WIDTH, R, init_generator(seed, N_WIDTH, R))
        for lr in lrs:
            run = df[(df.seed == seed) & (df.lr == lr)].sort_values("step")
            ref = reference_run("toy", seed_slice(fz, i), A0, B0, 1.0, "adam", lr, 2.0 * lr, cfg.steps)
            for key, values in ref.items():
                np.testing.assert_allclose(run[key].to_numpy(), values, rtol=1e-11, atol=1e-13)


def test_a_sweep_does_not_depend_on_the_tile(monkeypatch):
    kw = dict(widths=[32, 64], lrs=[0.1, 0.01], lr_exponent=None, seeds=[0, 1], steps=6, model=TOY,
              progress=False)
    default = simulate(**kw)
    monkeypatch.setattr(models, "TILE_BYTES", 1)  # one sample row per tile
    one_row = simulate(**kw)
    pd.testing.assert_frame_equal(one_row, default, rtol=1e-12, atol=0)


def test_float32_runs_the_same_model_and_returns_float64_columns():
    kw = dict(widths=64, lrs=[0.05], lr_exponent=None, inits=["A", "B"], seeds=[0], steps=3, model=TOY,
              progress=False)
    d64, d32 = simulate(**kw), simulate(**kw, train_cfg=TrainConfig(steps=3, dtype="float32"))
    stats = [c for c in d64.columns if d64[c].dtype.kind == "f"]
    assert all(d32[c].dtype == np.float64 for c in stats)  # same draws: tests/test_models.py
    ok = d64[["loss", "z_a_rms", "z_b_rms"]].to_numpy()
    np.testing.assert_allclose(d32[["loss", "z_a_rms", "z_b_rms"]].to_numpy(), ok, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("init, c", [("A", -0.5), ("B", -1.0)])
def test_float32_gives_the_validation_exponents_of_float64(init, c):
    """The validation matrix's Adam cells at c* (layer setting, n = 2^7..2^11, 6 seeds, step T = 4): every
    compared statistic's fitted width exponent in float32 is within 0.01 of float64's."""
    kw = dict(widths=list(WIDTHS[False]), inits=init, lr_exponent=c, optimizers="adam",
              seeds=list(SEEDS[False]), model=ModelConfig(n_train=1), progress=False)
    last = [d[d.step == STEPS] for d in (simulate(**kw, train_cfg=TrainConfig(steps=STEPS, dtype=dt))
                                         for dt in ("float64", "float32"))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        for stat in COMPARED:
            if (last[0][stat] == 0).all():  # an exact zero of the theory (e.g. δ¹ under Init[A] at t = 1)
                assert (last[1][stat] == 0).all()
                continue
            s64, s32 = (fit_exponent(d, stat, method="width").slope for d in last)
            assert abs(s32 - s64) < 0.01, (stat, s64, s32)


def test_float32_finds_the_toy_loss_optimal_grid_points_of_float64():
    """A small Fig. 2 grid (n = 64..512, η = 2^-2..2^-12, 3 seeds, 20 steps): the same loss-optimal grid point
    for every (init, width, seed), hence slopes within 0.01."""
    kw = dict(widths=[64, 128, 256, 512], lrs=[2.0 ** -k for k in range(2, 13)], lr_exponent=None,
              inits=["A", "B"], seeds=[0, 1, 2], model=ModelConfig(setting="toy", n_train=32), progress=False)
    cfgs = (TrainConfig(steps=20, record_every=2, dtype=dt) for dt in ("float64", "float32"))
    (o64, fits64), (o32, fits32) = (loss_optimal(simulate(**kw, train_cfg=cfg)) for cfg in cfgs)
    merged = o64.merge(o32, on=["init", "width", "seed"], suffixes=("64", "32"))
    assert len(merged) == 24 and (merged.lr_opt64 == merged.lr_opt32).all()
    for i in ("A", "B"):
        assert abs(fits32[i].slope - fits64[i].slope) < 0.01
