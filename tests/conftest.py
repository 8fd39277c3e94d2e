"""Shared pytest fixtures: small random inputs and the registry's variant names."""

import os

import jax
import numpy as np
import pytest

from attnlab.models import attention

ALL_VARIANTS = sorted(attention.REGISTRY)


def pytest_collection_modifyitems(config, items):
  if jax.default_backend() != "gpu":
    skip_gpu = pytest.mark.skip(reason="needs a GPU (jax backend is "
                                f"{jax.default_backend()!r})")
    for item in items:
      if "gpu" in item.keywords:
        item.add_marker(skip_gpu)


@pytest.fixture
def rng():
  return np.random.default_rng(0)
