"""``attnlab sample``: text from an LM run's latest checkpoint through the KV cache."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def check_options(*, length: int, temperature: float, top_k: int) -> None:
  """ConfigError unless ``length >= 0``, ``temperature >= 0`` (0 is greedy) and ``top_k >= 0``
  (0 keeps every token), all finite."""
  import math
  from attnlab.train.config_loading import ConfigError
  if not (isinstance(length, int) and length >= 0):
    raise ConfigError(f"--length must be a non-negative integer, got {length!r}")
  if not (math.isfinite(temperature) and temperature >= 0):
    raise ConfigError(f"--temperature must be >= 0 (0 samples greedily), got {temperature!r}")
  if not (isinstance(top_k, int) and top_k >= 0):
    raise ConfigError(f"--top-k must be a non-negative integer (0 keeps all), got {top_k!r}")


def load_run(workdir: str):
  """(RunSettings, model, step) of the LM run in ``workdir`` at its latest checkpoint."""
  from attnlab.train import loop  # the trainer pulls in the task's data and optimizer
  return loop.load_trained(workdir, expected_task="lm")


def generate(model, prompt: bytes, *, length: int, temperature: float, top_k: int,
             seed: int = 0) -> bytes:
  """Sample ``length`` bytes after ``prompt`` token by token with the KV cache."""
  max_len = model.cfg.max_len
  tokens = list(prompt)[-(max_len - 1):] or [10]
  length = min(length, max_len - len(tokens))
  cache = model.init_cache(1, max_len)
  step = nnx.jit(lambda m, t, c: m(t, cache=c))
  logits, cache = step(model, jnp.asarray([tokens], jnp.int32), cache)
  key = jax.random.key(seed)
  out = []
  for i in range(length):
    last = logits[0, -1] / max(temperature, 1e-6)
    if top_k and top_k < last.shape[-1]:
      kth = jnp.sort(last)[-top_k]
      last = jnp.where(last < kth, -1e30, last)
    nxt = int(jax.random.categorical(jax.random.fold_in(key, i), last))
    out.append(nxt)
    logits, cache = step(model, jnp.asarray([[nxt]], jnp.int32), cache)
  return bytes(out)


def sample_from_workdir(workdir: str, prompt: str, *, length=200, temperature=0.8, top_k=40,
                        seed=0) -> str:
  check_options(length=length, temperature=temperature, top_k=top_k)
  _, model, _ = load_run(workdir)
  text = generate(model, prompt.encode(), length=length, temperature=temperature, top_k=top_k,
                  seed=seed)
  return prompt + text.decode("utf-8", errors="replace")
