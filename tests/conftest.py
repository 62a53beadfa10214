"""Shared test setup: hypothesis profiles (derandomised in CI), one fixed thread count."""

import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("dev", deadline=None, max_examples=30)
settings.register_profile("ci", deadline=None, max_examples=30, derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))

torch.set_num_threads(int(os.environ.get("LORA_THEORY_THREADS", "2")))


@pytest.fixture(scope="session")
def sweep_cache(tmp_path_factory):
    """One sweep cache for the quick figures and the notebooks of a test session, as a user's
    `.lora_theory_cache` is shared by `lora-theory figures` and the notebooks (they run the same sweeps)."""
    return tmp_path_factory.mktemp("sweep_cache")


@pytest.fixture
def gen():
    """A seeded CPU torch generator."""
    return torch.Generator().manual_seed(1234)
