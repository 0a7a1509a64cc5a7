"""Shared fixtures: dtypes, a seeded generator, optional torch, hypothesis profiles.

Helpers that tests import by name live in helpers.py; slow references in reference/.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "dev", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


try:  # PyTorch is a comparison target only, never a dependency
    import torch as _torch
except ImportError:  # pragma: no cover - depends on the environment
    _torch = None


@pytest.fixture
def torch():
    if _torch is None:
        pytest.skip("torch is not installed")
    return _torch
