"""Frozen parts of the two settings: shapes, laws, and the teacher's independence from the width."""

import torch

from lora_theory import ModelConfig
from lora_theory.models import SETTINGS, gaussian_matmul, teacher_data


def test_gaussian_matmul_has_the_law_of_x_times_a_gaussian_matrix(gen):
    """Columns of the draw are N(0, std² X Xᵀ): empirical covariance over many draws matches."""
    X = torch.randn((6, 300), generator=gen, dtype=torch.float64)
    draws = torch.stack([gaussian_matmul(X, 400, 0.1, gen) for _ in range(100)])  # (100, 6, 400)
    cov = torch.einsum("kai,kbi->ab", draws, draws) / (100 * 400)
    expected = 0.01 * X @ X.T
    assert (cov - expected).abs().max() < 0.05 * expected.abs().max()


def test_gaussian_matmul_block_path_when_samples_exceed_inputs(gen):
    X = torch.randn((50, 8), generator=gen, dtype=torch.float64)
    Y = gaussian_matmul(X, 2000, 1.0, gen)
    assert Y.shape == (50, 2000)
    torch.testing.assert_close((Y @ Y.T) / 2000, X @ X.T, rtol=0.2, atol=2.0)


def test_toy_shapes_and_standardised_labels():
    cfg = ModelConfig(setting="toy", n_train=64, n_test=16, teacher_width=100)
    fz = SETTINGS["toy"].build(32, [0, 1], cfg, torch.float64)
    assert fz.Z.shape == (2, 64, 32) and fz.Z_test.shape == (2, 16, 32)
    assert fz.w_out.shape == (2, 32) and fz.target.shape == (2, 64)
    assert (fz.Z >= 0).all()  # ReLU features
    torch.testing.assert_close(fz.target.mean(dim=1), torch.zeros(2, dtype=torch.float64), atol=1e-12, rtol=0)


def test_teacher_is_the_same_task_at_every_width():
    cfg = ModelConfig(setting="toy", n_train=16, n_test=4, teacher_width=100)
    a = SETTINGS["toy"].build(32, [5], cfg, torch.float64)
    b = SETTINGS["toy"].build(64, [5], cfg, torch.float64)
    torch.testing.assert_close(a.target, b.target)
    X, y = teacher_data(5, cfg, torch.float64)
    assert X.shape == (20, cfg.d_in) and y.shape == (20,)


def test_mup_readout_is_smaller_by_sqrt_n():
    sp = SETTINGS["toy"].build(1024, [0], ModelConfig(setting="toy", n_train=8, readout="sp"), torch.float64)
    mup_cfg = ModelConfig(setting="toy", n_train=8, readout="mup")
    mup = SETTINGS["toy"].build(1024, [0], mup_cfg, torch.float64)
    ratio = (sp.w_out.std() / mup.w_out.std()).item()
    assert 0.8 * 32 < ratio < 1.25 * 32


def test_float32_frozen_parts_are_the_float64_draws_rounded():
    """A float32 run simulates the same model as float64: each frozen tensor is drawn in float64, then cast
    (rounded)."""
    from dataclasses import fields

    for setting, cfg in (("layer", ModelConfig(n_train=3)),
                         ("toy", ModelConfig(setting="toy", n_train=8, n_test=4, teacher_width=50))):
        f64 = SETTINGS[setting].build(64, [0, 1], cfg, torch.float64)
        f32 = SETTINGS[setting].build(64, [0, 1], cfg, torch.float32)
        for f in fields(f64):
            a, b = getattr(f64, f.name), getattr(f32, f.name)
            assert (a is None) == (b is None)
            if a is not None:
                assert b.dtype == torch.float32 and torch.equal(b, a.float()), (setting, f.name)
