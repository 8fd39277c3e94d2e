"""Table A4 of experiments/icl_regression/README.md (§1.8): `standard` with
anisotropic covariates x ~ N(0, Σ), Σ_ij = 0.5^|i-j|, H = 2 (seeds 0-4) and H = 4 (seeds 0-2).
``get_config`` is configs/icl_regression.py's; pass ``:covariance=anisotropic`` (the sweep's
arg)."""

from attnlab.configs.icl_regression import get_config  # noqa: F401  (the sweep's config)


def sweep(add):
  for heads, seeds in ((2, range(5)), (4, range(3))):
    for seed in seeds:
      add(**{"model.num_heads": heads, "seed": seed})
