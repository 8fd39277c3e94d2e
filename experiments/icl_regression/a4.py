"""Table A4 of experiments/icl_regression/README.md (§1.8): `standard` with
anisotropic covariates x ~ N(0, Σ), Σ_ij = 0.5^|i-j|, H = 2 and 4, seed 0. ``get_config`` is
configs/icl_regression.py's; pass ``:covariance=anisotropic`` (the sweep's arg)."""

from attnlab.configs.icl_regression import get_config  # noqa: F401  (the sweep's config)


def sweep(add):
  for heads in (2, 4):
    add(**{"model.num_heads": heads, "seed": 0})
