"""Garg et al.'s out-of-distribution prompts for trained ``icl_garg`` runs (table B2 of
experiments/icl_garg/README.md, §2.3).

Training draws x, w ~ N(0, I_d), y = wᵀx without noise. Each setting here changes one thing:

* ``standard``: the training distribution;
* ``skewed``: x = z·T with T = U diag(λ) Uᵀ, λ_i = 1/i (i = 1..d), U a fixed random rotation,
  T rescaled so that E‖x‖² = d: the covariance TᵀT has eigenvalues d·(1/i²) / Σ_j 1/j² and trace
  d (the identity's);
* ``half_subspace``: the same with λ = 1 on d//2 directions and 0 on the rest (rescaled to trace
  d): every x lies in a fixed (d//2)-dimensional subspace;
* ``scale_x=s``: x times s (not rescaled: the zero predictor scores s²);
* ``scale_w=s``: w times s;
* ``noisy_labels``: y rescaled to standard deviation √d over the whole prompt set, then label
  noise of standard deviation 1 on every label (context and query): the best possible
  normalised error is 1/d;
* ``orthant``: the context inputs of a prompt all lie in one random orthant (x_i = |z_i| ⊙ s
  with one random sign vector s per prompt), the query is an unrestricted draw;
* ``orthogonal_query``: the query at position k is x_k with its projection on the span of the
  k context inputs removed, rescaled to x_k's norm; defined for k < d only (from k = d on the
  context spans R^d), so its cells for k ≥ d are empty.

Every setting transforms the same standard-normal draws (``default_rng(seed)``), so the model and
the baselines (least squares, 3-NN, averaging, :mod:`attnlab.train.baselines`) see identical
prompts in every run. The error at k is the normalised squared error (pred − y)² / d of the
prediction of the query at position k from the k points before it.

    attnlab ood --workdir runs/icl_garg_toy/attention=standard,steps=5000,seed=0
"""

from __future__ import annotations

import math
import os
import time
from typing import Sequence

import numpy as np

from attnlab.train import baselines, data_icl, icl_ood

SHIFTS = ("standard", "skewed", "half_subspace", "scale_x=0.333", "scale_x=0.5", "scale_x=2",
          "scale_x=3", "scale_w=0.5", "scale_w=2", "noisy_labels", "orthant", "orthogonal_query")
PROMPT_SEED = 20220805
ROTATION_SEED = 0
N_PROMPTS = 1280
NOISE_STD = 1.0
BASELINES = ("least_squares", "3nn", "averaging")
LABELS = {"model": "model", "least_squares": "least squares", "3nn": "3-nearest neighbours",
          "averaging": "averaging"}
SEPARATE_QUERY = ("orthant", "orthogonal_query")
"""Settings whose query differs from the context point at the same position."""


def rotation(d: int, seed: int = ROTATION_SEED) -> np.ndarray:
  """A fixed random orthogonal ``[d, d]`` matrix (QR of a Gaussian, column signs fixed)."""
  q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
  return q * np.sign(np.diag(r))


def transform_eigenvalues(d: int, kind: str) -> np.ndarray:
  """λ of T before rescaling: ``skewed`` 1/i, ``half_subspace`` 1 on d//2 entries, else 0."""
  if kind == "skewed":
    return 1.0 / np.arange(1, d + 1)
  if kind == "half_subspace":
    return (np.arange(d) < d // 2).astype(np.float64)
  raise ValueError(f"kind must be 'skewed' or 'half_subspace', got {kind!r}")


def input_transform(d: int, kind: str, seed: int = ROTATION_SEED) -> np.ndarray:
  """T with x = z·T: ``U diag(λ) Uᵀ`` rescaled so that tr(TᵀT) = d (E‖x‖² = d)."""
  lam = transform_eigenvalues(d, kind)
  u = rotation(d, seed)
  t = (u * lam) @ u.T
  return t * math.sqrt(d / np.sum(lam ** 2))


def parse_shift(shift: str) -> dict:
  """``{"kind", "scale_x", "scale_w"}`` of a setting name (ValueError for unknown names)."""
  out = {"kind": shift, "scale_x": 1.0, "scale_w": 1.0}
  if shift.startswith(("scale_x=", "scale_w=")):
    name, value = shift.split("=", 1)
    out["kind"], out[name] = name, float(value)
  elif shift not in SHIFTS:
    raise ValueError(f"unknown setting {shift!r}; choose one of {SHIFTS} (any scale_x=S, "
                     f"scale_w=S)")
  return out


def _orthogonal_queries(x: np.ndarray) -> np.ndarray:
  """Query k = x_k minus its projection on span(x_0..x_{k-1}), rescaled to ‖x_k‖; NaN for
  k ≥ d (the span is all of R^d)."""
  n, p, d = x.shape
  q = np.full_like(x, np.nan)
  q[:, 0] = x[:, 0]
  for k in range(1, min(p, d)):
    _, _, vt = np.linalg.svd(x[:, :k], full_matrices=False)  # [N, k, d], rows span the context
    proj = np.einsum("nd,nkd,nke->ne", x[:, k], vt, vt)
    orth = x[:, k] - proj
    q[:, k] = orth * (np.linalg.norm(x[:, k], axis=-1) / np.linalg.norm(orth, axis=-1))[:, None]
  return q


def prompts(shift: str, n_prompts: int, n_points: int, d: int,
            seed: int = PROMPT_SEED) -> dict[str, np.ndarray]:
  """The prompts of one setting (float64): context ``xs [N, P, d]``, ``ys [N, P]`` and the query
  at each position, ``qx [N, P, d]``, ``qy [N, P]`` (equal to the context point except under
  :data:`SEPARATE_QUERY`), and ``w [N, d]``. A pure function of its arguments."""
  p = parse_shift(shift)
  rng = np.random.default_rng(seed)
  z = rng.standard_normal((n_prompts, n_points, d))
  w = rng.standard_normal((n_prompts, d))
  eps = rng.standard_normal((n_prompts, n_points))
  signs = np.where(rng.random((n_prompts, 1, d)) < 0.5, -1.0, 1.0)
  x = z @ input_transform(d, p["kind"]) if p["kind"] in ("skewed", "half_subspace") else z
  x = p["scale_x"] * x
  w = p["scale_w"] * w
  xs, qx = x, x
  if p["kind"] == "orthant":
    xs = np.abs(x) * signs
  elif p["kind"] == "orthogonal_query":
    qx = _orthogonal_queries(x)
  ys, qy = np.einsum("npd,nd->np", xs, w), np.einsum("npd,nd->np", qx, w)
  if p["kind"] == "noisy_labels":
    factor = math.sqrt(d) / ys.std()
    ys, qy = ys * factor + NOISE_STD * eps, qy * factor + NOISE_STD * eps
  return {"xs": xs, "ys": ys, "qx": qx, "qy": qy, "w": w, "signs": signs}


def per_position(predict_prefix, xs, ys, qx) -> np.ndarray:
  """``[N, P]`` predictions of the query at each k from the k context points before it:
  ``predict_prefix(xs, ys) -> [N, P]`` predicts every position from the points before it (a
  causal model or a prefix baseline); when the query differs from the context, position k is
  predicted from a copy whose point k is the query (later positions do not matter). Positions
  with a NaN query stay NaN."""
  if qx is xs or np.array_equal(qx, xs):
    return np.asarray(predict_prefix(xs, ys), np.float64)
  out = np.full(ys.shape, np.nan)
  for k in range(xs.shape[1]):
    if np.isnan(qx[:, k]).any():
      continue
    cut = xs[:, :k + 1].copy()
    cut[:, k] = qx[:, k]
    out[:, k] = np.asarray(predict_prefix(cut, ys[:, :k + 1]), np.float64)[:, k]
  return out


def evaluate(predict, *, d: int, n_points: int, shifts: Sequence[str] = SHIFTS,
             n_prompts: int = N_PROMPTS, seed: int = PROMPT_SEED,
             baseline_names: Sequence[str] = BASELINES) -> dict:
  """``{predictor: {setting: {k: normalised error or None}}}``; ``predict(xs, ys) -> [N, P]``
  is the trained model (None: baselines only)."""
  names = (["model"] if predict is not None else []) + list(baseline_names)
  out = {n: {s: {} for s in shifts} for n in names}
  for shift in shifts:
    pr = prompts(shift, n_prompts, n_points, d, seed)
    for name in names:
      fn = predict if name == "model" else baselines.GARG_BASELINES[name]
      err = (per_position(fn, pr["xs"], pr["ys"], pr["qx"]) - pr["qy"]) ** 2 / d
      for k in range(n_points):
        v = float(np.mean(err[:, k]))
        out[name][shift][k] = v if math.isfinite(v) else None
  return out


def prompts_fingerprint(shifts: Sequence[str], n_prompts: int, n_points: int, d: int,
                        seed: int = PROMPT_SEED) -> str:
  """SHA-256 (16 hex digits) of every setting's prompts."""
  arrays = {}
  for s in shifts:
    pr = prompts(s, n_prompts, n_points, d, seed)
    arrays.update({f"{s}/{k}": np.nan_to_num(v.astype(np.float32)) for k, v in pr.items()})
  return data_icl.fingerprint(arrays)


def model_predictor(model, n_points: int, chunk: int = 256):
  """``predict(xs, ys) -> [N, P]`` of a restored PromptRegressionModel (float32, in chunks;
  prompts shorter than ``n_points`` are zero-padded to it, so one compile serves every k: the
  model is causal, so the padding never reaches the positions read)."""
  from flax import nnx
  fn = nnx.jit(lambda m, xs, ys: m(xs, ys))

  def predict(xs, ys):
    n, p, d = xs.shape
    full = max(n_points, p)
    pad_x = np.zeros((n, full, d), np.float32)
    pad_y = np.zeros((n, full), np.float32)
    pad_x[:, :p], pad_y[:, :p] = xs, ys
    parts = [np.asarray(fn(model, pad_x[i:i + chunk], pad_y[i:i + chunk]))
             for i in range(0, n, chunk)]
    return np.concatenate(parts)[:, :p]
  return predict


def markdown(results: dict, ks: Sequence[int], title: str | None = None) -> str:
  """Rows (setting, predictor), columns k: normalised error (— where undefined)."""
  names = list(results)
  lines = ([title, ""] if title else []) + [
      "| setting | predictor | " + " | ".join(f"k = {k}" for k in ks) + " |",
      "|---|---|" + "---|" * len(ks)]
  for shift in results[names[0]]:
    for name in names:
      vals = [results[name][shift].get(k) for k in ks]
      cells = " | ".join("—" if v is None else f"{v:.3f}" for v in vals)
      lines.append(f"| `{shift}` | {LABELS.get(name, name)} | {cells} |")
  return "\n".join(lines)


def run_garg_ood(workdir: str, *, out: str | None = None, json_out: str | None = None,
                 n_prompts: int = N_PROMPTS, shifts: Sequence[str] = SHIFTS,
                 seed: int = PROMPT_SEED) -> dict:
  """Restore an ``icl_garg`` run's latest checkpoint, evaluate every setting at every k, write
  ``out`` (default ``<workdir>/ood.md``) and ``json_out`` (default ``out`` with ``.json``)."""
  from attnlab.train import loop
  for s in shifts:
    parse_shift(s)
  t0 = time.time()
  run, model, step = loop.load_trained(workdir, expected_task="icl_garg")
  s = run.task_settings
  d, n_points = s.d, s.eval_points
  attention = run.config_dict["attention"]["name"]
  results = evaluate(model_predictor(model, n_points, s.eval_batch_size), d=d, n_points=n_points,
                     shifts=shifts, n_prompts=n_prompts, seed=seed)
  ks = list(range(n_points))
  wall = time.time() - t0
  title = (f"Out-of-distribution normalised error of `{workdir}` (step {step}, "
           f"{attention}, d = {d}); {n_prompts} prompts per setting, seed {seed}")
  text = markdown(results, ks, title)
  out = out or os.path.join(workdir, "ood.md")
  json_out = json_out or (os.path.splitext(out)[0] + ".json")
  doc = {"task": "icl_garg", "workdir": workdir, "step": int(step),
         "attention": attention, "seed": run.seed, "d": d, "n_points": n_points,
         "n_prompts": n_prompts, "prompt_seed": seed,
         "prompts_sha256": prompts_fingerprint(shifts, n_prompts, n_points, d, seed),
         "shifts": list(shifts), "ks": ks, "baselines": list(BASELINES),
         "wall_s": round(wall, 1),
         "nerr": {n: {sh: {str(k): v for k, v in per.items()} for sh, per in r.items()}
                  for n, r in results.items()}}
  return icl_ood.write_outputs(text, doc, out, json_out, wall)
