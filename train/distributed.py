"""Multi-process start-up: ``jax.distributed.initialize`` when the environment asks for it.

* ``ATTNLAB_COORDINATOR=host:port``, ``ATTNLAB_NUM_PROCESSES``, ``ATTNLAB_PROCESS_ID``: explicit
  (on CPU this also selects gloo collectives, which is how the multi-process tests run);
* ``JAX_COORDINATOR_ADDRESS`` or a SLURM/Cloud TPU environment: ``jax.distributed.initialize()``
  with JAX's own auto-detection.
"""

from __future__ import annotations

import os

import jax


def maybe_initialize() -> bool:
  """Initialise the distributed runtime if asked; True when several processes run."""
  if os.environ.get("ATTNLAB_NUM_PROCESSES"):
    if os.environ.get("JAX_PLATFORMS", "cpu") == "cpu":
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(os.environ["ATTNLAB_COORDINATOR"],
                               num_processes=int(os.environ["ATTNLAB_NUM_PROCESSES"]),
                               process_id=int(os.environ["ATTNLAB_PROCESS_ID"]))
    return True
  if os.environ.get("JAX_COORDINATOR_ADDRESS") or int(os.environ.get("SLURM_NTASKS", "1")) > 1:
    jax.distributed.initialize()
    return True
  return False
