"""A longer `standard` run for experiments/icl_garg/README.md: the smoke preset's data and
tiny model trained for 5,000 steps (the length of Garg et al.'s ``toy.yaml``; lr and batch as
published). ``get_config`` is configs/icl_garg.py's."""

from attnlab.configs.icl_garg import get_config  # noqa: F401  (the sweep's config)


def sweep(add):
  add(arg="attention=standard", steps=5000, seed=0)
