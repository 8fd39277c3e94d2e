"""Table A3 of experiments/icl_regression/README.md (§1.7): length generalisation.
Trained at L = 40, tested at L = 10 ... 100: softmax `standard` (H = 2, 4) against the same
model with linear attention normalised by the training length (``linear_fixed``, the claim's
baseline) or by the actual length (``linear_actual``, the control). Seeds 0-2 (softmax H = 2:
0-4, it splits between the single-head plateau and leaving it), smoke preset.
``get_config`` is configs/icl_regression.py's; run with
``'--config.eval.lengths=(10,20,40,60,80,100)'`` on the sweep command line."""

from attnlab.configs.icl_regression import get_config  # noqa: F401  (the sweep's config)


def sweep(add):
  for heads, seeds in ((2, range(5)), (4, range(3))):
    for seed in seeds:
      add(**{"model.num_heads": heads, "seed": seed})
  for norm in ("linear_fixed", "linear_actual"):
    for seed in range(3):
      add(**{"model.num_heads": 2, "model.normalization": norm, "seed": seed})
