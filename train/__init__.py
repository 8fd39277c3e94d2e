"""Training: data, baselines, the training loop, sweeps and reports."""
