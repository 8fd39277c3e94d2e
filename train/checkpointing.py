"""Orbax checkpoints of the train state (params, optimizer state, step counters).

Saves are asynchronous and atomic (orbax writes to a temporary directory and renames it when
complete, so a checkpoint interrupted while being written is never listed). Restores target an
abstract state that carries the *current* shardings, so a checkpoint written on one mesh
restores onto another.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


def manager(workdir: str, settings, *, read_only: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager in ``workdir/checkpoints`` (max_to_keep, async from the settings)."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=settings.max_to_keep,
      enable_async_checkpointing=settings.async_save,
      read_only=read_only,
      create=not read_only)
  return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")),
                               options=options)


def save(mngr: ocp.CheckpointManager, step: int, state, *, force: bool = False) -> None:
  mngr.save(step, args=ocp.args.StandardSave(state), force=force)


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state):
  """Restore ``step`` onto the shardings of ``abstract_state`` (ShapeDtypeStructs)."""
  return mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))


def restore_params_from(directory: str, abstract_state):
  """The latest checkpoint under ``directory`` (a run's workdir or its checkpoints folder),
  restored onto ``abstract_state``; used by ``checkpoint.init_from``."""
  path = directory
  if os.path.isdir(os.path.join(directory, "checkpoints")):
    path = os.path.join(directory, "checkpoints")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"checkpoint.init_from={directory!r} is not a directory")
  mngr = ocp.CheckpointManager(os.path.abspath(path),
                               options=ocp.CheckpointManagerOptions(read_only=True, create=False))
  step = mngr.latest_step()
  if step is None:
    raise FileNotFoundError(f"no checkpoint found under checkpoint.init_from={directory!r}")
  return mngr.restore(step, args=ocp.args.StandardRestore(abstract_state)), step


def abstract_like(tree, shardings):
  """ShapeDtypeStructs of ``tree`` carrying ``shardings``."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)
