"""Device mesh and logical-axis rules: data parallel, FSDP and tensor parallel by config alone.

Parameters carry logical axis names (``embed``, ``heads``, ``kv_heads``, ``mlp``, ``vocab``);
:func:`logical_rules` maps them to mesh axes ``data`` and ``model``; batches are sharded over
``data``.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from attnlab.train.config_loading import ConfigError

MESH_AXES = ("data", "model")


def make_mesh(mesh_settings) -> jax.sharding.Mesh:
  """A ``(data, model)`` mesh over all devices; -1 in one axis takes the rest."""
  n = jax.device_count()
  data, model = mesh_settings.data, mesh_settings.model
  if data == -1 and model == -1:
    raise ConfigError("config.mesh: only one of data/model may be -1")
  if data == -1:
    data = n // model if model > 0 and n % model == 0 else 0
  if model == -1:
    model = n // data if data > 0 and n % data == 0 else 0
  if data <= 0 or model <= 0 or data * model != n:
    raise ConfigError(f"config.mesh data={mesh_settings.data} x model={mesh_settings.model} "
                      f"does not fit the {n} available device(s)")
  return jax.make_mesh((data, model), MESH_AXES,
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)


def logical_rules(mesh_settings) -> dict[str, str | None]:
  """Logical axis -> mesh axis. Tensor parallel over ``model``; FSDP puts ``embed`` on ``data``."""
  return {"heads": "model", "kv_heads": "model", "mlp": "model", "vocab": "model",
          "embed": "data" if mesh_settings.fsdp else None}


def _mesh_spec(logical: P, shape, mesh, rules) -> P:
  axes = []
  for dim, name in zip(shape, tuple(logical) + (None,) * (len(shape) - len(logical))):
    axis = rules.get(name) if isinstance(name, str) else None
    if axis is not None and (dim % mesh.shape[axis] or axis in axes):
      axis = None  # cannot split evenly (or axis already used): replicate this dimension
    axes.append(axis)
  return P(*axes)


def state_shardings(abstract_state, mesh, rules):
  """NamedShardings for a pytree of abstract NNX state (params, optimizer state, ...)."""
  specs = nnx.get_partition_spec(abstract_state)

  def one(spec, leaf):
    shape = getattr(leaf, "shape", ())
    return NamedSharding(mesh, _mesh_spec(spec if isinstance(spec, P) else P(), shape, mesh,
                                          rules))

  return jax.tree.map(one, specs, abstract_state,
                      is_leaf=lambda x: isinstance(x, P))


def batch_sharding(mesh, ndim: int = 2) -> NamedSharding:
  """Batch arrays: leading axis over ``data``, the rest replicated."""
  return NamedSharding(mesh, P("data", *([None] * (ndim - 1))))


def global_batch(local: dict, mesh) -> dict:
  """Global arrays from this process's rows (``jax.make_array_from_process_local_data``)."""
  return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(v)), v)
          for k, v in local.items()}
