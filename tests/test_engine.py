"""The batched engine against autograd and against a one-configuration-at-a-time torch.optim loop."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from lora_theory import ModelConfig, TrainConfig, simulate
from lora_theory.engine import forward
from lora_theory.inits import sample_init
from lora_theory.models import SETTINGS, init_generator
from lora_theory.reference import reference_run, seed_slice
from lora_theory.simulate import LearningRate, Unit, run_unit
from lora_theory.stats import delta_stats, z_b_rms

SEEDS, N, R = [0, 3], 48, 4


def _model(setting):
    return ModelConfig(setting=setting, n_train=5 if setting == "layer" else 32, n_test=8, teacher_width=64)


@pytest.mark.parametrize("setting", ["layer", "toy"])
def test_hand_gradients_equal_autograd(setting, gen):
    fz = SETTINGS[setting].build(N, SEEDS, _model(setting), torch.float64)
    A = (torch.randn((2, 3, R, N), generator=gen, dtype=torch.float64) / N ** 0.5).requires_grad_()
    B = torch.randn((2, 3, N, R), generator=gen, dtype=torch.float64).requires_grad_()
    _, loss, _ = forward(SETTINGS[setting], fz, A, B, s=1.7, grad=False)
    autograd_A, autograd_B = torch.autograd.grad(loss.sum(), (A, B))
    A, B = A.detach(), B.detach()
    ZA, loss_again, ctx = forward(SETTINGS[setting], fz, A, B, s=1.7)
    gA, gB = SETTINGS[setting].grads(fz, ctx, ZA, B, s=1.7)
    torch.testing.assert_close(loss_again, loss.detach(), rtol=1e-13, atol=0)
    torch.testing.assert_close(gA, autograd_A, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(gB, autograd_B, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("setting", ["layer", "toy"])
@pytest.mark.parametrize("opt", ["adam", "sgd", "signsgd"])
@pytest.mark.parametrize("init", ["A", "B", "AB_raw"])
def test_batched_equals_reference_loop(setting, opt, init):
    """All seeds × learning rates in one batch == each configuration alone with nn.Module + torch.optim."""
    model, cfg = _model(setting), TrainConfig(steps=5, lr_ratio=2.0)
    pairs = tuple(LearningRate(lr, None) for lr in (0.05, 0.01, 0.002))
    df = run_unit(Unit(model, cfg, N, R, init, opt, tuple(SEEDS), pairs))
    fz = SETTINGS[setting].build(N, SEEDS, model, torch.float64)
    for i, seed in enumerate(SEEDS):
        A0, B0 = sample_init(init, N, R, init_generator(seed, N, R))
        for lr, _ in pairs:
            run = df[(df.seed == seed) & (df.lr == lr)].sort_values("step")
            ref = reference_run(setting, seed_slice(fz, i), A0, B0, 1.0, opt, lr, 2.0 * lr, cfg.steps)
            ok = ~run.diverged.to_numpy()  # a diverged run stops (NaN); the reference runs on to inf
            assert ok[0]
            for key, values in ref.items():
                np.testing.assert_allclose(run[key].to_numpy()[ok], values[ok], rtol=1e-11, atol=1e-13)
            if not ok.all():
                assert not np.isfinite(ref["loss"][-1]) or ref["loss"][-1] > cfg.diverge_threshold


def test_z_b_rms_from_the_gram_matrix(gen):
    ZA = torch.randn((2, 3, 5, R), generator=gen, dtype=torch.float64)
    B = torch.randn((2, 3, N, R), generator=gen, dtype=torch.float64)
    direct = (1.7 * ZA @ B.transpose(-1, -2)).square().mean(dim=(2, 3)).sqrt()
    torch.testing.assert_close(z_b_rms(ZA, B, 1.7), direct, rtol=1e-12, atol=0)


@pytest.mark.parametrize("setting", ["layer", "toy"])
@pytest.mark.parametrize("scaling, alpha, init",
                         [("lora", 8.0, "AB"), ("rslora", 3.0, "B"), ("lora", 1.0, "A")])
def test_simulate_with_a_multiplier_equals_the_reference_loop(setting, scaling, alpha, init):
    """End to end through simulate() with s = α/r ≠ 1 (2, 1.5, 0.25): the multiplier, the pretrained
    subtraction of AB and the LoRA+ ratio reach the engine as the plain torch loop applies them."""
    model = replace(_model(setting), scaling=scaling, alpha=alpha)
    s = model.multiplier(R)
    assert s != 1.0
    cfg = TrainConfig(steps=4, lr_ratio=2.0)
    df = simulate(widths=N, ranks=R, lrs=[0.05, 0.01], lr_exponent=None, inits=init, optimizers="adam",
                  seeds=SEEDS, model=model, train_cfg=cfg)
    fz = SETTINGS[setting].build(N, SEEDS, model, torch.float64)
    for i, seed in enumerate(SEEDS):
        A0, B0 = sample_init(init, N, R, init_generator(seed, N, R))
        one = seed_slice(fz, i)
        # the reference subtracts s·B0A0 from the pretrained part itself, from the definition
        if init == "AB":
            lora0 = s * (one.Z @ A0.T) @ B0.T
            one = replace(one, base=one.base - lora0,
                          base_test=None if one.base_test is None
                          else one.base_test - s * (one.Z_test @ A0.T) @ B0.T)
        for lr in (0.05, 0.01):
            run = df[(df.seed == seed) & (df.lr == lr)].sort_values("step")
            ref = reference_run(setting, one, A0, B0, s, "adam", lr, 2.0 * lr, cfg.steps)
            for key, values in ref.items():
                np.testing.assert_allclose(run[key].to_numpy(), values, rtol=1e-10, atol=1e-13)


def test_same_seed_same_numbers_and_seeds_differ():
    kw = dict(widths=[32, 64], seeds=[0, 1], steps=4,
              model=ModelConfig(setting="toy", n_train=16, n_test=8, teacher_width=50))
    a, b = simulate(**kw), simulate(**kw)
    pd.testing.assert_frame_equal(a, b)
    last = a[a.step == 4].set_index(["init", "width", "lr", "seed"])["loss"].unstack("seed")
    assert (last[0] != last[1]).all()


def test_chunking_does_not_change_results():
    kw = dict(widths=64, lrs=[0.5, 1.0, 2.0], seeds=[0, 1], steps=3)
    pd.testing.assert_frame_equal(simulate(**kw), simulate(**kw, max_batch_bytes=1))


def test_divergence_is_recorded_and_isolated():
    """A huge learning rate diverges on its rows; its batch-mates equal their runs without it."""
    kw = dict(widths=64, inits="B", lr_exponent=None, seeds=0, steps=8, optimizers="sgd")
    both = simulate(lrs=[1e-3, 1e6], **kw)
    alone = simulate(lrs=[1e-3], **kw)
    bad = both[both.lr == 1e6]
    assert bad["diverged"].iloc[-1] and not bad["diverged"].iloc[0]
    after = bad[bad.diverged].iloc[1:]
    assert after[["loss", "z_b_rms"]].isna().all().all()
    good = both[both.lr == 1e-3].reset_index(drop=True)
    pd.testing.assert_frame_equal(good, alone)
    assert not good["diverged"].any()


def test_lora_plus_ratio_and_width_scaled_lr():
    df = simulate(widths=[64, 256], lrs=2.0, lr_exponent=-0.5, inits="A", seeds=0, steps=1,
                  train_cfg=TrainConfig(lr_ratio=4.0, lr_ratio_exponent=1.0))
    row = df[(df.width == 256)].iloc[0]
    assert row.lr == pytest.approx(2.0 * 256 ** -0.5)
    assert row.lr_b == pytest.approx(row.lr * 4.0 * 256)


def test_delta_decomposition_adds_up():
    """δ¹ + δ² + δ³ is the whole feature update: RMS(ΔZ_B) ≤ sum of the three RMS (triangle)."""
    df = simulate(widths=128, inits=["A", "B", "AB"], seeds=0, steps=4)
    d = df[df.step >= 1]
    assert (d.dz_b_rms <= d.delta1_rms + d.delta2_rms + d.delta3_rms + 1e-12).all()
    # under Init[A], step 1 moves only B (A's partner B0 = 0): δ¹ = δ³ = 0 and ΔZ_B = δ²
    first = df[(df.init == "A") & (df.step == 1)]
    assert (first.delta1_rms == 0).all() and (first.delta3_rms == 0).all()
    np.testing.assert_allclose(first.dz_b_rms, first.delta2_rms, rtol=1e-12)


def test_low_rank_delta_statistics_equal_dense_computation(gen):
    """δ¹, δ², δ³ and ΔZ_B RMS from rank-r factors equal the RMS of the dense (N, n) tensors."""

    Z = torch.randn((2, 5, N), generator=gen, dtype=torch.float64)
    A, dA = (torch.randn((2, 3, R, N), generator=gen, dtype=torch.float64) for _ in range(2))
    B, dB = (torch.randn((2, 3, N, R), generator=gen, dtype=torch.float64) for _ in range(2))
    ZA, dZA = Z[:, None] @ A.transpose(-1, -2), Z[:, None] @ dA.transpose(-1, -2)
    got = delta_stats(Z, ZA, B, dA, dB, 0.5, like=None)
    d1 = 0.5 * dZA @ (B - dB).transpose(-1, -2)
    d2 = 0.5 * (ZA - dZA) @ dB.transpose(-1, -2)
    d3 = 0.5 * dZA @ dB.transpose(-1, -2)
    dense = {"delta1_rms": d1, "delta2_rms": d2, "delta3_rms": d3, "dz_b_rms": d1 + d2 + d3}
    for key, x in dense.items():
        torch.testing.assert_close(got[key], x.square().mean(dim=(2, 3)).sqrt(), rtol=1e-10, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_numbers():
    kw = dict(widths=[64, 256], seeds=[0, 1], steps=5, setting="toy",
              model=ModelConfig(setting="toy", n_train=32, n_test=8))
    cpu = simulate(**kw)
    gpu = simulate(**kw, train_cfg=TrainConfig(steps=5, device="cuda"))
    num = [c for c in cpu.columns if cpu[c].dtype.kind == "f"]
    np.testing.assert_allclose(gpu[num].to_numpy(), cpu[num].to_numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_adam_equals_the_op_by_op_update(dtype, monkeypatch):
    """The fused kernel path and the op-by-op path give the same updates over many steps."""
    from lora_theory import optim

    if optim._FUSED_ADAM is None:
        pytest.skip("this torch has no fused Adam kernel")
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn((2, 3, 4, 16), generator=g, dtype=dtype) for _ in range(20)]
    lr = torch.rand((2, 3), generator=g, dtype=dtype)
    rule = optim.Adam(0.9, 0.999, 1e-6)
    fused_state, fused = rule.init(grads[0]), []
    for t, gr in enumerate(grads, start=1):
        fused.append(rule.update(fused_state, gr, lr, t))
    monkeypatch.setattr(optim, "_FUSED_ADAM", None)
    plain_state = rule.init(grads[0])
    tol = 1e-13 if dtype == torch.float64 else 1e-5
    for t, (gr, want) in enumerate(zip(grads, fused), start=1):
        torch.testing.assert_close(rule.update(plain_state, gr, lr, t), want, rtol=tol, atol=0)


def test_divergence_rule_is_the_documented_one():
    """TrainConfig.diverge_threshold's help and the engine's docstring say: non-finite loss or Z_B,
    or Z_B > τ, or the loss > τ both absolutely and relative to its start. Each clause alone, and its
    near misses."""
    from lora_theory.engine import _diverging

    tau, t = 10.0, lambda *v: torch.tensor(v, dtype=torch.float64)
    loss0 = t(2.0, 2.0, 2.0, 2.0, 2.0, 0.5, 2.0)
    loss = t(30.0, 11.0, float("nan"), 1.0, 1.0, 9.0, float("inf"))
    zb = t(0.1, 0.1, 0.1, float("inf"), 11.0, 0.1, 0.1)
    got = _diverging(loss, loss0, zb, tau).tolist()
    # loss 30 > τ and 15× its start: diverged; 11 > τ but only 5.5×: not; NaN loss; inf Z_B; Z_B > τ;
    # 18× its start but below τ: not; inf loss
    assert got == [True, False, True, True, True, False, True]
    assert ("relative to its initial value"
            in TrainConfig.__dataclass_fields__["diverge_threshold"].metadata["help"])


def test_layer_setting_rejects_a_test_split():
    """The layer setting has no held-out data: asking for its test loss is an error,
    not a silent train loss."""
    model = _model("layer")
    fz = SETTINGS["layer"].build(N, SEEDS, model, torch.float64)
    ZA, B = (torch.zeros(len(SEEDS), 1, model.n_train, R, dtype=torch.float64),
             torch.zeros(len(SEEDS), 1, N, R, dtype=torch.float64))
    with pytest.raises(ValueError, match="no held-out data"):
        SETTINGS["layer"].loss(fz, ZA, B, 1.0, test=True)
