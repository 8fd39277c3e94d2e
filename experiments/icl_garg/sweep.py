"""The runs behind experiments/icl_garg/README.md (§2, table B1 at the smoke preset).

Table B1's sweep. ``get_config`` is configs/icl_garg.py's; the runs are what a shared 2-core CPU
can run: `standard`, `memory_efficient` (must equal `standard`) and `relational`, seeds 0, 1, 2
(results_smoke/ holds seeds 0 and 1).
"""

from attnlab.configs.icl_garg import get_config  # noqa: F401  (the sweep's config)


def sweep(add):
  for name in ("standard", "memory_efficient", "relational"):
    for seed in (0, 1, 2):
      add(arg=f"attention={name}", seed=seed)
