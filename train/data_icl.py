"""In-context regression samplers (experiments/icl_regression/README.md §1.1, §1.8, §1.9,
experiments/icl_garg/README.md §2.1): jittable, all from a key.

* He et al.: :func:`sample_linear_regression` (``beta ~ N(0, I/d)``, noise variance 0.1 on the
  context *and* the query label, following the reference code), :func:`anisotropic_cov` for
  §1.8, and :func:`sample_multitask` for §1.9.
* Garg et al.: :func:`sample_garg` (``w ~ N(0, I)``, noiseless) and :func:`curriculum`.

Batches for training are drawn from ``jax.random.fold_in(key, step)`` so they are a pure
function of (seed, step). The samplers are jitted with their sizes and scalar options static
(the key, ``cov``, ``active_dims`` and ``x_transform`` may be traced); all normals of a batch come
from one flat draw, which compiles several times faster on CPU than one draw per shape.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np


def anisotropic_cov(d: int, rho: float = 0.5) -> np.ndarray:
  """``Sigma_ij = rho**|i-j|`` (float64 ``[d, d]``), experiments/icl_regression/README.md §1.8."""
  if not -1 < rho < 1:
    raise ValueError(f"rho must lie in (-1, 1), got {rho}")
  idx = np.arange(d)
  return rho ** np.abs(idx[:, None] - idx[None, :]).astype(np.float64)


def _normals(key, shapes, dtype):
  """Independent standard normal arrays of the given shapes, from one flat draw.

  One ``jax.random.normal`` call of a 1-D shape compiles several times faster on CPU than one
  call per multi-dimensional shape; the pieces are still i.i.d.
  """
  sizes = [math.prod(s) for s in shapes]
  flat = jax.random.normal(key, (sum(sizes),), dtype)
  out, start = [], 0
  for shape, size in zip(shapes, sizes):
    out.append(flat[start:start + size].reshape(shape))
    start += size
  return out


def _colour(z, cov):
  """Rows ``z[..., d]`` coloured by ``cov``: ``x = z L^T`` with ``L L^T = cov``."""
  if cov is None:
    return z
  chol = jnp.linalg.cholesky(jnp.asarray(cov, jnp.float32)).astype(z.dtype)
  return z @ chol.T


@functools.partial(jax.jit, static_argnames=(
    "batch", "d", "n_context", "noise_var", "beta_scale", "query_noise", "dtype",
    "return_beta"))
def sample_linear_regression(key, batch: int, *, d: int = 5, n_context: int = 40,
                             noise_var: float = 0.1, beta_scale: float | None = None,
                             cov=None, query_noise: bool = True, dtype=jnp.float32,
                             return_beta: bool = False) -> dict[str, jax.Array]:
  """He et al.'s prompts: ``y = beta^T x + eps``.

  Args:
    key: a ``jax.random.key``.
    batch: number of prompts B.
    d: covariate dimension.
    n_context: context pairs L.
    noise_var: label noise variance sigma^2 (context and, with ``query_noise``, query).
    beta_scale: std of each coefficient; default ``1/sqrt(d)`` (beta ~ N(0, I/d)).
    cov: optional ``[d, d]`` covariance of x and x_q (default identity).
    query_noise: add label noise to ``yq`` too (the reference code does; the zero predictor
      then scores ``1 + sigma^2``).
    dtype: float dtype of the arrays.
    return_beta: also return ``beta [B, d]``.

  Returns:
    dict with ``x [B, L, d]``, ``y [B, L, 1]``, ``xq [B, d]``, ``yq [B, 1]`` (and ``beta``).
  """
  scale = 1.0 / math.sqrt(d) if beta_scale is None else beta_scale
  zx, zq, zb, eps, eps_q = _normals(
      key, [(batch, n_context, d), (batch, d), (batch, d), (batch, n_context), (batch,)], dtype)
  x, xq, beta = _colour(zx, cov), _colour(zq, cov), scale * zb
  std = math.sqrt(noise_var)
  y = jnp.einsum("bld,bd->bl", x, beta) + std * eps
  yq = jnp.einsum("bd,bd->b", xq, beta)
  if query_noise:
    yq = yq + std * eps_q
  out = {"x": x, "y": y[..., None], "xq": xq, "yq": yq[:, None]}
  if return_beta:
    out["beta"] = beta
  return out


def multitask_slices(d: int = 6, d1: int = 4, d2: int = 4) -> tuple[slice, slice]:
  """Coordinates of the two tasks: the first ``d1`` and the last ``d2`` of x."""
  if d1 > d or d2 > d:
    raise ValueError(f"task dimensions {d1}, {d2} exceed d={d}")
  return slice(0, d1), slice(d - d2, d)


@functools.partial(jax.jit, static_argnames=(
    "batch", "d", "n_context", "d1", "d2", "noise_var", "beta_scale", "query_noise", "dtype",
    "return_beta"))
def sample_multitask(key, batch: int, *, d: int = 6, n_context: int = 48, d1: int = 4,
                     d2: int = 4, noise_var: float = 0.1, beta_scale: float = 1.0,
                     query_noise: bool = False, dtype=jnp.float32,
                     return_beta: bool = False) -> dict[str, jax.Array]:
  """Two-task superposition prompts (experiments/icl_regression/README.md §1.9,
  ``MultiTaskLinearReg``).

  ``y1 = beta1^T x[:d1]`` and ``y2 = beta2^T x[d-d2:]`` (overlapping coordinates for d=6,
  d1=d2=4), ``beta_t ~ N(0, beta_scale^2 I)``; context labels get noise of std
  ``sqrt(d_t) * sqrt(noise_var)``; query labels are noiseless unless ``query_noise``.

  Returns:
    dict with ``x [B, L, d]``, ``y [B, L, 2]``, ``xq [B, d]``, ``yq [B, 2]`` (and ``beta1``,
    ``beta2`` with ``return_beta``).
  """
  s1, s2 = multitask_slices(d, d1, d2)
  x, xq, z1, z2, eps, eps_q = _normals(
      key, [(batch, n_context, d), (batch, d), (batch, d1), (batch, d2), (batch, n_context, 2),
            (batch, 2)], dtype)
  beta1, beta2 = beta_scale * z1, beta_scale * z2
  y = jnp.stack([jnp.einsum("bld,bd->bl", x[..., s1], beta1),
                 jnp.einsum("bld,bd->bl", x[..., s2], beta2)], axis=-1)
  yq = jnp.stack([jnp.einsum("bd,bd->b", xq[:, s1], beta1),
                  jnp.einsum("bd,bd->b", xq[:, s2], beta2)], axis=-1)
  std = jnp.asarray([math.sqrt(d1), math.sqrt(d2)], dtype) * math.sqrt(noise_var)
  y = y + std * eps
  if query_noise:
    yq = yq + std * eps_q
  out = {"x": x, "y": y, "xq": xq, "yq": yq}
  if return_beta:
    out.update(beta1=beta1, beta2=beta2)
  return out


@functools.partial(jax.jit, static_argnames=(
    "batch", "d", "n_points", "w_scale", "noise_std", "dtype", "return_w"))
def sample_garg(key, batch: int, *, d: int, n_points: int, active_dims=None,
                x_transform=None, w_scale: float = 1.0, noise_std: float = 0.0,
                dtype=jnp.float32, return_w: bool = False) -> dict[str, jax.Array]:
  """Garg et al.'s noiseless linear-regression prompts.

  ``x ~ N(0, I_d)``, ``w ~ N(0, I_d)`` (no 1/d factor), ``y = w^T x``. Coordinates
  ``>= active_dims`` of every x are zeroed (the curriculum); ``active_dims`` may be traced.

  Args:
    key: a ``jax.random.key``.
    batch: prompts B.
    d: dimension.
    n_points: points K per prompt.
    active_dims: curriculum dimension (None: all d).
    x_transform: optional ``[d, d]`` T with ``x = z T`` (OOD covariance shifts, §2.3).
    w_scale: multiplies w (OOD scaled-w).
    noise_std: label noise std (0: noiseless, as in training).
    dtype: float dtype.
    return_w: also return ``w [B, d]``.

  Returns:
    dict with ``xs [B, K, d]`` and ``ys [B, K]`` (and ``w``).
  """
  xs, w, eps = _normals(key, [(batch, n_points, d), (batch, d), (batch, n_points)], dtype)
  if x_transform is not None:
    xs = xs @ jnp.asarray(x_transform, dtype)
  if active_dims is not None:
    keep = (jnp.arange(d) < active_dims).astype(dtype)
    xs = xs * keep
  w = w_scale * w
  ys = jnp.einsum("bkd,bd->bk", xs, w)
  if noise_std:
    ys = ys + noise_std * eps
  out = {"xs": xs, "ys": ys}
  if return_w:
    out["w"] = w
  return out


@dataclasses.dataclass(frozen=True)
class Schedule:
  """A curriculum variable: ``start``, +``inc`` every ``interval`` steps, capped at ``end``."""

  start: int
  end: int
  inc: int
  interval: int

  def value(self, step: int) -> int:
    return schedule_value(step, self.start, self.end, self.inc, self.interval)


def schedule_value(step: int, start: int, end: int, inc: int, interval: int) -> int:
  """``start + inc * (step // interval)``, clipped at ``end`` (Garg's ``Curriculum``).

  The reference increments after every ``interval``-th update, so step 0 .. interval-1 use
  ``start`` and the end value is reached at step ``interval * ceil((end-start)/inc)``.
  """
  step, start, end, inc, interval = (int(v) for v in (step, start, end, inc, interval))
  if interval <= 0:
    raise ValueError(f"interval must be positive, got {interval}")
  value = start + inc * (max(step, 0) // interval)
  return min(value, end) if inc >= 0 else max(value, end)


GARG_CURRICULUM = {"dims": Schedule(5, 20, 1, 2000), "points": Schedule(11, 41, 2, 2000)}
"""Garg et al.'s published curriculum (``src/conf/linear_regression.yaml``)."""


def _field(obj: Any, *names: str):
  for n in names:
    if isinstance(obj, Mapping):
      if n in obj:
        return obj[n]
    elif hasattr(obj, n):
      return getattr(obj, n)
  raise KeyError(f"curriculum config lacks {' / '.join(names)}")


def _schedule(obj: Any) -> Schedule:
  if isinstance(obj, Schedule):
    return obj
  if isinstance(obj, (tuple, list)):
    return Schedule(*obj)
  return Schedule(int(_field(obj, "start")), int(_field(obj, "end")),
                  int(_field(obj, "inc", "increment")), int(_field(obj, "interval")))


def curriculum(step: int, cfg: Any = None) -> tuple[int, int]:
  """``(active_dims, n_points)`` at a training step (experiments/icl_garg/README.md §2.1).

  Args:
    step: the training step (0-based).
    cfg: a mapping or attribute object with ``dims`` and ``points``, each a :class:`Schedule`,
      a ``(start, end, inc, interval)`` tuple or an object/mapping with ``start``, ``end``,
      ``inc`` (or ``increment``) and ``interval``; flat keys ``dims_start``, ``dims_end``, ...
      are accepted too. None: Garg's published schedule (5->20 dims, 11->41 points, every 2k).
  """
  cfg = GARG_CURRICULUM if cfg is None else cfg
  out = []
  for var in ("dims", "points"):
    try:
      sched = _schedule(_field(cfg, var))
    except KeyError:
      sched = Schedule(int(_field(cfg, f"{var}_start")), int(_field(cfg, f"{var}_end")),
                       int(_field(cfg, f"{var}_inc", f"{var}_increment")),
                       int(_field(cfg, f"{var}_interval")))
    out.append(sched.value(step))
  return out[0], out[1]


def fingerprint(arrays: dict) -> str:
  """SHA-256 (first 16 hex digits) of named arrays: keys sorted, each key's name, dtype, shape
  and bytes: equal arrays give equal fingerprints, whatever the machine."""
  h = hashlib.sha256()
  for name in sorted(arrays, key=str):
    a = np.ascontiguousarray(np.asarray(arrays[name]))
    h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]
