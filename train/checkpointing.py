"""Orbax checkpoints of the train state (params, optimizer state, step counters).

Saves are asynchronous and atomic (orbax writes to a temporary directory and renames it when
complete, so a checkpoint interrupted while being written is never listed). Restores target an
abstract state that carries the *current* shardings, so a checkpoint written on one mesh
restores onto another.

A checkpoint that fails to restore (a truncated file, an emptied ``_METADATA``, a deleted
manifest) is not fatal: :func:`restore_latest_intact` falls back to the newest one that
restores, warns naming the bad ones, and (when writable) moves them to
``WORKDIR/checkpoints.bad/`` so new saves of those steps do not collide with them.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import time

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


def _warn(message: str) -> None:
  print(f"warning: {message}", file=sys.stderr, flush=True)


def restore_latest_intact(mngr: ocp.CheckpointManager, abstract_state, *, quarantine: bool,
                          warn=_warn):
  """``(state, step)`` from the newest checkpoint that restores; ``(None, None)`` if there are
  none. Checkpoints that fail are skipped with a warning naming them; with ``quarantine`` they
  are moved to ``checkpoints.bad/<step>-<time>`` next to ``checkpoints/``.

  Raises:
    StateError: there are checkpoints but none of them restores.
  """
  from attnlab.train.workdir import StateError
  steps = sorted(mngr.all_steps(), reverse=True)
  bad: list[tuple[int, str]] = []
  for step in steps:
    try:
      state = restore(mngr, step, abstract_state)
    except Exception as e:  # orbax/tensorstore raise many types for a damaged checkpoint
      if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EIO):
        raise  # the disk or its permissions, not the checkpoint: leave it alone
      reason = " ".join(str(e).split())[:200] or type(e).__name__
      bad.append((step, reason))
      warn(f"checkpoint {os.path.join(mngr.directory, str(step))} is damaged and is skipped "
           f"({type(e).__name__}: {reason})")
      continue
    if bad and quarantine:
      _quarantine(mngr, [s for s, _ in bad], warn)
    return state, step
  if bad:
    raise StateError(
        f"no intact checkpoint in {mngr.directory} (steps {[s for s, _ in bad]} all fail to "
        f"restore); move that folder away to train this run from scratch")
  return None, None


def _quarantine(mngr: ocp.CheckpointManager, steps, warn) -> None:
  root = os.fspath(mngr.directory)
  dest_root = root.rstrip("/") + ".bad"
  os.makedirs(dest_root, exist_ok=True)
  for step in steps:
    dest = os.path.join(dest_root, f"{step}-{int(time.time())}")
    shutil.move(os.path.join(root, str(step)), dest)
    warn(f"moved damaged checkpoint {step} to {dest}")
  mngr.reload()


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
