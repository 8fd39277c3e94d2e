"""Per-head KQ / OV diagnostics of He et al.'s one-layer model
(experiments/icl_regression/README.md §1.6, §1.8, §1.9).

For an :class:`~attnlab.models.regression.AttentionOnlyRegression` whose layer has bilinear
dot-product scores (``standard``, ``memory_efficient``, and the softmax heads of
``uniform_broadcast``), with token width D = d + n_out:

* ``M_h = Q^hT K^h`` (D x D), so the logit is ``z_q^T M_h z_l / sqrt(D)``;
* ``OV_h`` (D x n_out): ``V^h`` composed with the read-out ``O^h``, column t reading output t;
* ``mu_h`` = the entry of OV_h from y's coordinate to the output (``mu_{h,t}`` per task);
* ``omega_h`` = mean of the first d diagonal entries of M_h / sqrt(d + 2): the reference
  repository's convention, whose +-0.13 lines the plots draw.

These are pure NumPy functions of the parameters, cheap enough to log during training
(``omega@h=0``, ``mu@h=1``; multitask ``mu@h=0,t=1``), and shared by the analysis script
``experiments/icl_regression/heads.py``.
"""

from __future__ import annotations

import numpy as np

def has_bilinear_heads(model) -> bool:
  """True when the layer's heads score with ``q.k`` on ``wq/wk/wv/wo`` (§1.6 scope):
  ``standard`` and its subclasses (``memory_efficient``, ``uniform_broadcast``)."""
  from attnlab.models.attention.standard import StandardAttention
  return isinstance(getattr(model, "attn", None), StandardAttention)


NOT_BILINEAR = {
    "enhanced_interactive": "its per-head score maps are mixed across heads by the ISI/CSI "
                            "networks before the softmax, so no head has one bilinear form M_h",
    "relational": "only its sensory heads score with q·k; its relational heads return symbols "
                  "and relations, not the tokens' y, so there is no per-head OV entry on y, "
                  "and its heads split the token width",
    "adaptive_filter": "its scores are precision-weighted residuals of complex projections "
                       "propagated in time (decay and rotation), not a bilinear q·k",
}
"""Why the §1.6 per-head scores do not apply to a registry variant (see
:func:`not_bilinear_reason`)."""


def not_bilinear_reason(name: str) -> str | None:
  """None when registry variant ``name`` has the bilinear heads of :func:`has_bilinear_heads`
  (its runs log omega_h / mu_h), else the reason printed in place of the per-head columns."""
  from attnlab.models.attention import registry
  from attnlab.models.attention.standard import StandardAttention
  try:
    cls = registry.variant(name)
  except (KeyError, ValueError):
    return f"unknown variant {name!r}"
  if isinstance(cls, type) and issubclass(cls, StandardAttention):
    return None
  return NOT_BILINEAR.get(name, "its layer is not a StandardAttention: no wq/wk/wv/wo "
                                "bilinear heads to read omega_h and mu_h from")


def _host(a) -> np.ndarray:
  """float64 NumPy copy of a parameter, also when it is spread over several processes."""
  if getattr(a, "is_fully_addressable", True):
    return np.asarray(a, np.float64)
  if a.is_fully_replicated:
    return np.asarray(a.addressable_data(0), np.float64)
  from jax.experimental import multihost_utils  # every process calls this (the loop does)
  return np.asarray(multihost_utils.process_allgather(a, tiled=True), np.float64)


def head_matrices(model) -> tuple[np.ndarray, np.ndarray]:
  """``(M [H, D, D], OV [H, D, n_out])`` of a model with a bilinear-score attention layer."""
  attn = model.attn
  h, dh = attn.num_heads, attn.head_dim
  wq, wk, wv, wo = (_host(m.kernel[...]) for m in (attn.wq, attn.wk, attn.wv, attn.wo))
  width = wq.shape[0]
  wq, wk, wv = (w.reshape(width, h, dh).transpose(1, 0, 2) for w in (wq, wk, wv))  # [H, D, dh]
  wo = wo.reshape(h, dh, width)[:, :, model.d:]  # the output coordinates read as predictions
  m = np.einsum("hid,hjd->hij", wq, wk)  # z_q^T M z_l = (z_q Wq)(z_l Wk)^T
  ov = np.einsum("hic,hct->hit", wv, wo)
  return m, ov


def head_scores(m: np.ndarray, ov: np.ndarray, d: int) -> dict:
  """The §1.6 diagnostics of a single-output model from ``M [H, D, D]`` and ``OV [H, D(, 1)]``."""
  ov = ov[..., 0] if ov.ndim == 3 else ov
  diag = np.diagonal(m[:, :d, :d], axis1=1, axis2=2)  # [H, d]
  omega = diag.mean(axis=1) / np.sqrt(d + 2)
  mu = ov[:, -1]
  off = m[:, :d, :d] - np.einsum("hi,ij->hij", diag, np.eye(d))
  max_diag = np.abs(diag).max(axis=1)
  leak = np.maximum(np.abs(m[:, -1, :]).max(axis=1), np.abs(m[:, :, -1]).max(axis=1))
  active = np.abs(mu) > 0.05 * np.abs(mu).max()
  return {
      "omega": omega,
      "omega_logit": omega * np.sqrt((d + 2) / (d + 1)),
      "mu": mu,
      "cv_diag": diag.std(axis=1) / np.abs(diag.mean(axis=1)),
      "offdiag_ratio": np.linalg.norm(off, axis=(1, 2)) / np.linalg.norm(diag, axis=1),
      "y_leakage": leak / max_diag,
      "last_entry_only": np.linalg.norm(ov[:, :d], axis=1) / np.abs(mu),
      "zero_sum_residual": float(np.abs(mu.sum()) / np.abs(mu).sum()),
      "active": active,
  }


SERVE_FRAC = 0.1
"""Head h serves task t if |mu_{h,t}| > SERVE_FRAC * max |mu|
(experiments/icl_regression/README.md §1.9)."""


def serving_heads(mu_HxT, serve_frac: float = SERVE_FRAC) -> dict:
  """``serves [H, T]``, ``shared [H]`` (serves every task) and ``active [H]`` (serves any) from
  the per-head, per-task OV entries ``mu [H, T]``."""
  mu = np.abs(np.asarray(mu_HxT, np.float64))
  serves = mu > serve_frac * mu.max()
  return {"serves": serves, "shared": serves.all(axis=1), "active": serves.any(axis=1)}


def task_scores(m: np.ndarray, ov: np.ndarray, d: int, slices,
                serve_frac: float = SERVE_FRAC) -> dict:
  """Multi-task diagnostics (§1.9) for tasks reading ``x[slices[t]]``.

  ``mu [H, T]``: OV entry from y_t's input coordinate (d + t) to output t; ``omega [H, T]``: the
  mean diagonal of M_h over task t's coordinates / sqrt(d + 2); ``serves [H, T]``: |mu_{h,t}| >
  ``serve_frac`` * max |mu|; ``shared``: heads serving every task; ``active``: any task.
  """
  n_tasks = len(slices)
  mu = np.stack([ov[:, d + t, t] for t in range(n_tasks)], axis=1)
  diag = np.diagonal(m, axis1=1, axis2=2)
  omega = np.stack([diag[:, s].mean(axis=1) for s in slices], axis=1) / np.sqrt(d + 2)
  return {"mu": mu, "omega": omega, **serving_heads(mu, serve_frac)}


def parameter_metrics(model, d: int, slices=None) -> dict[str, float]:
  """``omega@h=i`` and ``mu@h=i`` (single task) or ``omega@h=i,t=j`` / ``mu@h=i,t=j`` (tasks
  1-based), plus ``zero_sum_residual`` (single task): logged during training (A-P2)."""
  m, ov = head_matrices(model)
  out = {}
  if slices is None:
    s = head_scores(m, ov, d)
    for i, (w, u) in enumerate(zip(s["omega"], s["mu"])):
      out[f"omega@h={i}"], out[f"mu@h={i}"] = float(w), float(u)
    out["zero_sum_residual"] = s["zero_sum_residual"]
    return out
  s = task_scores(m, ov, d, slices)
  for i in range(m.shape[0]):
    for t in range(len(slices)):
      out[f"omega@h={i},t={t + 1}"] = float(s["omega"][i, t])
      out[f"mu@h={i},t={t + 1}"] = float(s["mu"][i, t])
  return out
