"""Adaptive Filter Attention's spiral-filtering toy (Racioppo, arXiv 2509.04154),
experiments/afa_spiral/README.md §1.

A noisy 2-D linear system ``dx/dt = A x`` with ``A = [[-0.1, -1], [1, -0.1]]`` (eigenvalues
``-0.1 ± 1i``) is integrated by Euler steps of 0.01 up to t = 10; every 10th state is observed
(t = 0, 0.1, ..., 10: 101 observations) with Gaussian measurement noise of std 2.0. The initial
state has radius uniform in [17, 23] and a uniform angle. Observations are divided by
:data:`SCALE`, embedded into ``d_model`` channels by a fixed random linear map ``W`` (per seed,
not trained) and read out by its pseudo-inverse (times :data:`SCALE`), so the model itself is
the attention layer. It reads observations 0..99 causally and predicts observation k + 1 at
position k; the loss is the MSE against the NOISY next observation, and evaluation reports the
MSE against the CLEAN next state (``mse_clean``; the measurement variance is 4.0) beside
closed-form references on the same test trajectories (:meth:`Task.reference_metrics`).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from attnlab.models.params import params_of
from attnlab.models.transformer import TransformerConfig
from attnlab.models.vector import VectorSequenceModel
from attnlab.train.config_loading import ConfigError
from attnlab.train.tasks import base

A = np.array([[-0.1, -1.0], [1.0, -0.1]])
"""The system matrix (eigenvalues -0.1 ± 1i: decay rate 0.1, 1 rad per unit time)."""
DT, STRIDE, N_OBS = 0.01, 10, 100  # Euler step, steps per observation, model inputs
OBS_DT = DT * STRIDE
NOISE_STD = 2.0
RADIUS = (17.0, 23.0)
SCALE = 20.0
TEST_SEED = 20250904
EVAL_CHUNK = 500


@dataclasses.dataclass(frozen=True)
class SpiralSettings:
  """Model and evaluation of a spiral-filtering run."""

  model: TransformerConfig
  test_size: int = 1000


def parse_settings(cd, spec) -> SpiralSettings:
  """Typed settings from ``config.model`` and ``config.eval``."""
  from attnlab.train.tasks.lm import transformer_config
  if cd.model.max_len < N_OBS:
    raise ConfigError(f"config.model.max_len={cd.model.max_len} must be >= {N_OBS} "
                      "(the observations a model reads)")
  if cd.eval.test_size < 1:
    raise ConfigError(f"config.eval.test_size must be positive, got {cd.eval.test_size}")
  model = transformer_config(cd, spec, vocab_size=1, train_length=N_OBS)
  if not model.causal:
    raise ConfigError("config.model.causal must be True: the task is next-step prediction")
  return SpiralSettings(model=model, test_size=int(cd.eval.test_size))


def transition() -> np.ndarray:
  """The exact one-observation map of the Euler scheme, ``(I + DT A)^STRIDE``."""
  return np.linalg.matrix_power(np.eye(2) + DT * A, STRIDE)


@functools.partial(jax.jit, static_argnames=("batch",))
def sample_trajectories(key, *, batch: int) -> dict:
  """``batch`` trajectories: ``clean`` and ``noisy`` float32 ``[B, N_OBS + 1, 2]`` (the states
  and observations at t = 0, 0.1, ..., 10)."""
  k_r, k_a, k_n = jax.random.split(key, 3)
  r = jax.random.uniform(k_r, (batch,), minval=RADIUS[0], maxval=RADIUS[1])
  angle = jax.random.uniform(k_a, (batch,), maxval=2 * jnp.pi)
  x0 = jnp.stack([r * jnp.cos(angle), r * jnp.sin(angle)], axis=-1)
  step = jnp.asarray(np.eye(2) + DT * A, jnp.float32)

  def euler(x, _):
    return x @ step.T, x
  _, states = jax.lax.scan(euler, x0, None, length=N_OBS * STRIDE + 1)  # [T, B, 2], from t=0
  clean = jnp.swapaxes(states[::STRIDE], 0, 1)
  noisy = clean + NOISE_STD * jax.random.normal(k_n, clean.shape)
  return {"clean": clean, "noisy": noisy}


def embedding(seed: int, d_model: int) -> tuple[np.ndarray, np.ndarray]:
  """The fixed read-in ``W [2, d_model]`` (entries N(0, 1/2), per seed) and its pseudo-inverse
  ``[d_model, 2]`` (the read-out)."""
  w = np.asarray(jax.random.normal(jax.random.fold_in(jax.random.key(seed), 2),
                                   (2, d_model))) / np.sqrt(2.0)
  return w.astype(np.float32), np.linalg.pinv(w).astype(np.float32)


def kalman_predictions(noisy: np.ndarray) -> np.ndarray:
  """One-step predictions ``[B, N_OBS, 2]`` of the Kalman filter that knows the dynamics and
  the noise (no process noise; prior N(0, E[r^2]/2 I), the moments of the initial state)."""
  phi, r = transition(), NOISE_STD ** 2 * np.eye(2)
  lo, hi = RADIUS
  p = np.eye(2) * (lo * lo + lo * hi + hi * hi) / 3 / 2
  x = np.zeros((noisy.shape[0], 2))
  out = []
  for k in range(N_OBS):
    gain = p @ np.linalg.inv(p + r)
    x = x + (noisy[:, k] - x) @ gain.T
    p = (np.eye(2) - gain) @ p
    x, p = x @ phi.T, phi @ p @ phi.T
    out.append(x)
  return np.stack(out, axis=1)


class Task(base.Task):
  """MSE of the next noisy observation; evaluation: MSE against the clean next state."""

  def __init__(self, run, workdir: str | None = None):
    super().__init__(run, workdir)
    self.w_in, self.w_out = embedding(run.seed, self.s.model.d_model)
    self.test = {k: np.asarray(v) for k, v in sample_trajectories(
        jax.random.key(TEST_SEED), batch=self.s.test_size).items()}
    self._predict = None
    self._latest: dict = {}

  def describe(self) -> dict:
    return {"observations": N_OBS, "obs_dt": OBS_DT, "noise_std": NOISE_STD,
            "radius": list(RADIUS), "test_size": self.s.test_size, "readout": "pinv"}

  def build_model(self, rngs: nnx.Rngs) -> VectorSequenceModel:
    return VectorSequenceModel(self.s.model, rngs=rngs)

  def predict(self, model, obs):
    """Next-observation predictions ``[B, N_OBS, 2]`` from observations ``[B, N_OBS, 2]``."""
    h = model(jnp.asarray(obs) / SCALE @ self.w_in)
    return (h @ self.w_out) * SCALE

  def local_batch(self, step: int, process_index: int = 0, process_count: int = 1) -> dict:
    key = jax.random.fold_in(jax.random.key(self.run.seed), step)
    b = sample_trajectories(key, batch=self.run.batch_size)
    rows = self.run.batch_size // process_count
    sl = slice(process_index * rows, (process_index + 1) * rows)
    return {k: np.asarray(v)[sl] for k, v in b.items()}

  def loss(self, model, batch, deterministic: bool):
    pred = self.predict(model, batch["noisy"][:, :N_OBS])
    loss = jnp.mean(jnp.square(pred - batch["noisy"][:, 1:]))
    mse_clean = jnp.mean(jnp.square(pred - batch["clean"][:, 1:]))
    return loss, {"loss": loss, "mse_clean": mse_clean}

  def evaluate(self, model_fn) -> dict:
    """``mse_clean`` (per coordinate, against the clean next state), ``mse_noisy`` (against
    the next observation) and ``mse_clean_last`` (the second half of each trajectory)."""
    if self._predict is None:
      self._predict = nnx.jit(self.predict)
    model, t = model_fn(), self.test
    pred = np.concatenate([np.asarray(self._predict(model, t["noisy"][i:i + EVAL_CHUNK, :N_OBS]))
                           for i in range(0, len(t["noisy"]), EVAL_CHUNK)])
    err = np.square(pred - t["clean"][:, 1:])
    self._latest = {"pred": pred[0], "model": model}
    return {"mse_clean": float(err.mean()), "mse_clean_last": float(err[:, N_OBS // 2:].mean()),
            "mse_noisy": float(np.square(pred - t["noisy"][:, 1:]).mean())}

  def reference_metrics(self) -> dict:
    """On the same test trajectories, per coordinate against the clean next state:
    ``persistence_mse`` (the current observation), ``oracle_step_mse`` (the exact transition
    applied to the current observation), ``kalman_mse`` (the Kalman filter with the true model;
    ``_last``: second half); ``noise_var`` = 4. With ``adaptive_filter``, the learned decay
    rates and nearest frequencies per head in units of 1/time (``afa_decay_h0``,
    ``afa_freq_near1_h0``; the truth is 0.1 and 1)."""
    t = self.test
    target = t["clean"][:, 1:]
    current = t["noisy"][:, :N_OBS]
    kalman = kalman_predictions(t["noisy"])
    out = {"noise_var": NOISE_STD ** 2,
           "persistence_mse": float(np.square(current - target).mean()),
           "oracle_step_mse": float(np.square(current @ transition().T - target).mean()),
           "kalman_mse": float(np.square(kalman - target).mean()),
           "kalman_mse_last": float(np.square(kalman - target)[:, N_OBS // 2:].mean())}
    dyn = self.learned_dynamics()
    for h, (decay, freqs) in enumerate(zip(dyn.get("decay_rate", []), dyn.get("freqs", []))):
      out[f"afa_decay_h{h}"] = decay
      out[f"afa_freq_near1_h{h}"] = min(freqs, key=lambda f: abs(f - 1.0))
    return out

  def learned_dynamics(self) -> dict:
    """The ``adaptive_filter`` layer's learned dynamics in units of the system's time (decay
    rate ``-mu / OBS_DT`` and frequencies ``|omega| / OBS_DT`` per head); empty otherwise."""
    model = self._latest.get("model")
    if model is None:
      return {}
    attn = model.stack.blocks[0].attn
    if type(attn).name != "adaptive_filter":
      return {}
    from attnlab.models.attention.adaptive_filter_core import dynamics
    dyn = dynamics(params_of(attn), attn.m, attn.options)
    mu, omega = np.asarray(dyn["mu"]), np.abs(np.asarray(dyn["omega"]))[:, ::2]
    return {"decay_rate": [float(-v / OBS_DT) for v in mu],
            "freqs": [sorted(float(f / OBS_DT) for f in row) for row in omega]}

  def final_files(self) -> dict:
    """``paths``: the first test trajectory (clean, noisy, predicted next states); with
    ``adaptive_filter``, ``dynamics``: :meth:`learned_dynamics`."""
    if not self._latest:
      return {}
    t = self.test
    out = {"paths": {"obs_dt": OBS_DT,
                     "clean": np.round(t["clean"][0], 4).tolist(),
                     "noisy": np.round(t["noisy"][0], 4).tolist(),
                     "pred": np.round(self._latest["pred"], 4).tolist()}}
    dyn = self.learned_dynamics()
    if dyn:
      out["dynamics"] = dyn
    return out
