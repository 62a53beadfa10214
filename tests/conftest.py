"""Shared test setup: hypothesis profiles (derandomised in CI), one fixed thread count."""

import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("dev", deadline=None, max_examples=30)
settings.register_profile("ci", deadline=None, max_examples=30, derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))

torch.set_num_threads(int(os.environ.get("LORA_THEORY_THREADS", "2")))


@pytest.fixture
def gen():
    """A seeded CPU torch generator."""
    return torch.Generator().manual_seed(1234)
