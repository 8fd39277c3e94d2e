"""Out-of-distribution evaluation of trained in-context-regression models
(experiments/icl_regression/README.md, Table A6).

Shifts of He et al.'s prompts (training: x ~ N(0, I_d), beta ~ N(0, I/d), label noise 0.1, L = 40):

* ``isotropic``: the training distribution itself;
* ``skew_linear`` / ``skew_geometric``: x ~ N(0, Sigma) with eigenvalues spread linearly /
  geometrically from 1 to 10, rescaled so that ``tr Sigma = d`` (the identity's trace, so
  ``E[(beta^T x)^2] = 1`` as in training; the spread stays 1:10). The eigenbasis is a fixed
  random rotation (QR of a Gaussian matrix from ``ROTATION_SEED``), the same for every prompt:
  a trained model's KQ block is close to, but not exactly, a multiple of the identity, and a
  rotation keeps the skew from lining up with whatever per-coordinate quirks it has.
  ``skew_covariance(..., rotate=False)`` gives the axis-aligned version;
* ``scale=s``: inputs (context and query x) times s;
* ``noise=v``: label noise variance v (context and query labels, as in training);
* lengths beyond training: every shift is evaluated at ``LENGTHS`` (80 and 160 > 40).

All shifts are drawn from the same standard normals (``default_rng(seed)``, float64, cast to
float32 for the model): the same z, beta and noise draws, transformed per shift, and each length
uses the first L pairs of a prompt of ``max(lengths)`` pairs. The model and every baseline see
identical prompts; the baselines are computed in float64 from the float32 prompts.

Baselines (:mod:`attnlab.train.baselines`): ``ridge`` with ``lambda = v d`` for the shift's noise
variance v (the Bayes posterior mean, also under skew and scale, since the prior on beta is
unchanged), ``least_squares`` (lambda = 0), ``dgd`` (debiased GD) and ``gd`` with the
training-time step ``ETA = 0.897`` (not re-tuned per shift).

    attnlab ood --workdir runs/a6/model.num_heads=4,seed=0 --out ood.md
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Sequence

import numpy as np

from attnlab.train import baselines

SHIFTS = ("isotropic", "skew_linear", "skew_geometric", "scale=0.5", "scale=2", "noise=0",
          "noise=0.5")
LENGTHS = (10, 20, 40, 80, 160)
PROMPT_SEED = 20251215
ROTATION_SEED = 0
N_PROMPTS = 10_000
SKEW_MAX = 10.0
BASELINES = ("ridge", "least_squares", "dgd", "gd")


def skew_eigenvalues(d: int, spread: str, top: float = SKEW_MAX) -> np.ndarray:
  """Eigenvalues spread ``linear``ly or ``geometric``ally from 1 to ``top``, times ``d / sum``
  (trace d, ratio ``top`` kept), ascending."""
  if spread == "linear":
    ev = np.linspace(1.0, top, d)
  elif spread == "geometric":
    ev = np.geomspace(1.0, top, d)
  else:
    raise ValueError(f"spread must be 'linear' or 'geometric', got {spread!r}")
  return ev * (d / ev.sum())


def rotation(d: int, seed: int = ROTATION_SEED) -> np.ndarray:
  """A fixed random orthogonal ``[d, d]`` matrix (QR of a Gaussian, signs fixed)."""
  q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
  return q * np.sign(np.diag(r))


def skew_covariance(d: int, spread: str, *, rotate: bool = True) -> np.ndarray:
  """``U diag(skew_eigenvalues) U^T`` (``U`` = :func:`rotation`, or I with ``rotate=False``)."""
  ev = skew_eigenvalues(d, spread)
  u = rotation(d) if rotate else np.eye(d)
  return (u * ev) @ u.T


def parse_shift(shift: str, noise_var: float = 0.1) -> dict:
  """``{"cov": [d, d] or None, "scale": s, "noise_var": v}`` description of a shift name."""
  out = {"spread": None, "scale": 1.0, "noise_var": float(noise_var)}
  if shift == "isotropic":
    pass
  elif shift in ("skew_linear", "skew_geometric"):
    out["spread"] = shift.split("_")[1]
  elif shift.startswith("scale="):
    out["scale"] = float(shift.split("=", 1)[1])
  elif shift.startswith("noise="):
    out["noise_var"] = float(shift.split("=", 1)[1])
    if out["noise_var"] < 0:
      raise ValueError(f"noise variance must be >= 0 in {shift!r}")
  else:
    raise ValueError(f"unknown shift {shift!r}; choose isotropic, skew_linear, skew_geometric, "
                     f"scale=S or noise=V")
  return out


def ood_prompts(shift: str, n_prompts: int, n_context: int, *, d: int = 5,
                noise_var: float = 0.1, seed: int = PROMPT_SEED,
                rotate: bool = True) -> dict[str, np.ndarray]:
  """He et al.'s prompts under ``shift`` (float32 numpy): ``x [N, L, d]``, ``y [N, L, 1]``,
  ``xq [N, d]``, ``yq [N, 1]``, ``beta [N, d]`` and the shift's ``noise_var`` (a float).

  A pure function of its arguments. Every shift transforms the same standard normals (for
  equal ``n_prompts``, ``n_context``, ``d`` and ``seed``); :func:`evaluate` draws at the
  longest length and scores each L on the first L pairs.
  """
  p = parse_shift(shift, noise_var)
  rng = np.random.default_rng(seed)
  zx = rng.standard_normal((n_prompts, n_context, d))
  zq = rng.standard_normal((n_prompts, d))
  beta = rng.standard_normal((n_prompts, d)) / math.sqrt(d)
  eps = rng.standard_normal((n_prompts, n_context))
  eps_q = rng.standard_normal(n_prompts)
  if p["spread"] is not None:
    ev = skew_eigenvalues(d, p["spread"])
    u = rotation(d) if rotate else np.eye(d)
    t = np.sqrt(ev)[:, None] * u.T  # x = z diag(sqrt ev) U^T has covariance U diag(ev) U^T
    zx, zq = zx @ t, zq @ t
  x, xq = p["scale"] * zx, p["scale"] * zq
  std = math.sqrt(p["noise_var"])
  y = np.einsum("bld,bd->bl", x, beta) + std * eps
  yq = np.einsum("bd,bd->b", xq, beta) + std * eps_q
  f32 = lambda a: np.asarray(a, np.float32)
  return {"x": f32(x), "y": f32(y[..., None]), "xq": f32(xq), "yq": f32(yq[:, None]),
          "beta": f32(beta), "noise_var": p["noise_var"]}


def baseline_predictions(name: str, x, y, xq, noise_var: float) -> np.ndarray:
  """``[N, 1]`` float64 prediction of baseline ``name`` for prompts with label noise
  ``noise_var``."""
  x, y, xq = (np.asarray(a, np.float64) for a in (x, y, xq))
  if name == "ridge":
    return baselines.ridge(x, y, xq, noise_var=noise_var)
  if name == "least_squares":
    return baselines.ridge(x, y, xq, lam=0.0)
  if name == "dgd":
    return baselines.debiased_gd(x, y, xq)
  if name == "gd":
    return baselines.gd(x, y, xq)
  raise ValueError(f"unknown baseline {name!r}; choose one of {BASELINES}")


def _mse(pred, yq) -> float:
  return float(np.mean((np.asarray(pred, np.float64).reshape(-1) -
                        np.asarray(yq, np.float64).reshape(-1)) ** 2))


def evaluate(predict, *, d: int = 5, noise_var: float = 0.1, shifts: Sequence[str] = SHIFTS,
             lengths: Sequence[int] = LENGTHS, n_prompts: int = N_PROMPTS,
             seed: int = PROMPT_SEED, baseline_names: Sequence[str] = BASELINES) -> dict:
  """``{"model": {shift: {L: mse}}, "<baseline>": {...}}``; ``predict(x, y, xq) -> [N, 1]``
  (None: baselines only)."""
  names = (["model"] if predict is not None else []) + list(baseline_names)
  out = {n: {s: {} for s in shifts} for n in names}
  for shift in shifts:
    full = ood_prompts(shift, n_prompts, max(lengths), d=d, noise_var=noise_var, seed=seed)
    for length in lengths:
      x, y = full["x"][:, :length], full["y"][:, :length]
      if predict is not None:
        out["model"][shift][int(length)] = _mse(predict(x, y, full["xq"]), full["yq"])
      for name in baseline_names:
        out[name][shift][int(length)] = _mse(
            baseline_predictions(name, x, y, full["xq"], full["noise_var"]), full["yq"])
  return out


def model_predictor(model, chunk: int = 1000):
  """``predict(x, y, xq)`` of a restored :class:`AttentionOnlyRegression`, in fixed-size chunks
  (one compile per length; the last partial chunk compiles once more)."""
  from flax import nnx
  fn = nnx.jit(lambda m, x, y, q: m(x, y, q))

  def predict(x, y, xq):
    n, parts = len(xq), []
    for i in range(0, n, chunk):
      parts.append(np.asarray(fn(model, x[i:i + chunk], y[i:i + chunk], xq[i:i + chunk])))
    return np.concatenate(parts)
  return predict


LABELS = {"model": "model", "ridge": "ridge (λ = σ²d, Bayes)", "least_squares": "least squares",
          "dgd": "debiased GD (η = 0.897)", "gd": "GD (η = 0.897)"}


def markdown(results: dict, title: str | None = None) -> str:
  """Rows (shift, predictor), columns the lengths: test MSE (query label noise included)."""
  names = list(results)
  shifts = list(results[names[0]])
  lengths = list(results[names[0]][shifts[0]])
  lines = ([f"{title}", ""] if title else []) + [
      "| shift | predictor | " + " | ".join(f"L = {l}" for l in lengths) + " |",
      "|---|---|" + "---|" * len(lengths)]
  for shift in shifts:
    for name in names:
      cells = " | ".join(f"{results[name][shift][l]:.3f}" for l in lengths)
      lines.append(f"| `{shift}` | {LABELS.get(name, name)} | {cells} |")
  return "\n".join(lines)


def _task_of(workdir: str) -> str | None:
  try:
    with open(os.path.join(workdir, "config.json")) as f:
      return json.load(f)["config"].get("task")
  except (OSError, ValueError, KeyError, TypeError, AttributeError):
    return None  # load_trained reports it


def prompts_fingerprint(shifts: Sequence[str], n_prompts: int, length: int, *, d: int,
                        noise_var: float, seed: int = PROMPT_SEED) -> str:
  """SHA-256 (16 hex digits) of every shift's prompts (as the model sees them, float32)."""
  from attnlab.train.data_icl import fingerprint
  arrays = {}
  for shift in shifts:
    p = ood_prompts(shift, n_prompts, length, d=d, noise_var=noise_var, seed=seed)
    arrays.update({f"{shift}/{k}": v for k, v in p.items() if k != "noise_var"})
  return fingerprint(arrays)


def run_ood(workdir: str, *, out: str | None = None, json_out: str | None = None,
            n_prompts: int | None = None, shifts: Sequence[str] = SHIFTS,
            lengths: Sequence[int] = LENGTHS, seed: int = PROMPT_SEED) -> dict:
  """Restore ``workdir``'s latest checkpoint, evaluate every shift and length, write the
  Markdown table (``out``, default ``<workdir>/ood.md``) and the numbers (``json_out``,
  default ``out`` with ``.json``). Returns the JSON document. An ``icl_garg`` run goes to
  :func:`attnlab.train.garg_ood.run_garg_ood` (Garg et al.'s settings, table B2);
  ``n_prompts`` None is each study's default."""
  from attnlab.train import loop
  from attnlab.train.config_loading import ConfigError
  if _task_of(workdir) == "icl_garg":  # Garg et al.'s settings (table B2)
    from attnlab.train import garg_ood
    return garg_ood.run_garg_ood(workdir, out=out, json_out=json_out,
                                 n_prompts=garg_ood.N_PROMPTS if n_prompts is None else n_prompts)
  n_prompts = N_PROMPTS if n_prompts is None else n_prompts
  for s in shifts:
    parse_shift(s)  # fail before the restore
  t0 = time.time()
  run, model, step = loop.load_trained(workdir, expected_task="icl_regression")
  s = run.task_settings
  if s.kind != "linear":
    raise ConfigError(f"attnlab ood needs a single-task run (data.kind='linear'); {workdir!r} "
                      f"has data.kind={s.kind!r}")
  if s.covariance != "isotropic":
    print(f"note: {workdir} was trained on {s.covariance} covariates; the shifts here are "
          f"relative to isotropic x")
  results = evaluate(model_predictor(model), d=s.d, noise_var=s.noise_var, shifts=shifts,
                     lengths=lengths, n_prompts=n_prompts, seed=seed)
  wall = time.time() - t0
  title = (f"Out-of-distribution test MSE of `{workdir}` (step {step}, {s.attention.name}, "
           f"H = {s.num_heads}, trained at L = {s.n_context}, noise {s.noise_var}); "
           f"{n_prompts} prompts per shift, seed {seed}")
  text = markdown(results, title)
  out = out or os.path.join(workdir, "ood.md")
  json_out = json_out or (os.path.splitext(out)[0] + ".json")
  doc = {"workdir": workdir, "step": int(step), "attention": s.attention.name,
         "num_heads": s.num_heads, "seed": run.seed, "train_length": s.n_context,
         "noise_var": s.noise_var, "n_prompts": n_prompts, "prompt_seed": seed, "d": s.d,
         "prompts_sha256": prompts_fingerprint(shifts, n_prompts, max(lengths), d=s.d,
                                               noise_var=s.noise_var, seed=seed),
         "task": "icl_regression", "baselines": list(BASELINES),
         "shifts": list(shifts), "lengths": [int(l) for l in lengths],
         "wall_s": round(wall, 1),
         "mse": {n: {sh: {str(l): v for l, v in per.items()} for sh, per in r.items()}
                 for n, r in results.items()}}
  return write_outputs(text, doc, out, json_out, wall)


def write_outputs(text: str, doc: dict, out: str, json_out: str, wall: float) -> dict:
  """Write an OOD table (Markdown ``out``, JSON ``json_out``), print it; returns ``doc``."""
  for path in (out, json_out):
    if os.path.dirname(path):
      os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(out, "w") as f:
    f.write(text + "\n")
  with open(json_out, "w") as f:
    json.dump(doc, f, indent=1)
  print(text)
  print(f"wrote {out} and {json_out} ({wall:.0f} s)")
  return doc
