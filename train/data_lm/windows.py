"""Batches: random training windows (a pure function of ``(seed, step)``) and deterministic
non-overlapping validation windows."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _window_starts(seed, step, high, batch_size: int):
  key = jax.random.fold_in(jax.random.key(seed), step)
  return jax.random.randint(key, (batch_size,), 0, high, dtype=jnp.int32)


@functools.partial(jax.jit, static_argnames=("seq_len",))
def _gather_windows(tokens_N, starts_B, seq_len: int):
  idx = starts_B[:, None] + jnp.arange(seq_len + 1, dtype=jnp.int32)[None, :]
  windows = jnp.take(tokens_N, idx, axis=0).astype(jnp.int32)
  return windows[:, :-1], windows[:, 1:]


def sample_windows(tokens_N, seed, step, batch_size: int, seq_len: int, *,
                   process_slice: tuple[int, int] | None = None):
  """Random training windows, a pure function of ``(seed, step)``.

  Window starts are ``randint(fold_in(key(seed), step), [batch_size], 0, N - seq_len)``;
  inputs are ``tokens[s : s+T]`` and targets ``tokens[s+1 : s+T+1]``. Jittable (``seed`` and
  ``step`` may be traced; ``batch_size``, ``seq_len`` and ``process_slice`` are static); called
  eagerly it runs two cached jitted pieces.

  Args:
    tokens_N: uint8/int ``[N]`` token array (on device).
    seed: int seed.
    step: int step.
    batch_size: the global batch size B.
    seq_len: window length T.
    process_slice: ``(process_index, process_count)``: return only rows
      ``[i*B/P, (i+1)*B/P)`` of the same global draw (B must divide by P).

  Returns:
    ``(inputs [b, T], targets [b, T])`` int32 with ``b = B`` or ``B / P``.
  """
  n = tokens_N.shape[0]
  if n < seq_len + 1:
    raise ValueError(f"corpus split of {n} tokens is too short for seq_len={seq_len}")
  starts_B = _window_starts(seed, step, n - seq_len, batch_size)
  if process_slice is not None:
    index, count = (int(v) for v in process_slice)
    if count < 1 or batch_size % count or not 0 <= index < count:
      raise ValueError(f"bad process_slice {process_slice} for batch_size {batch_size}")
    rows = batch_size // count
    starts_B = starts_B[index * rows:(index + 1) * rows]
  return _gather_windows(tokens_N, starts_B, seq_len)


def eval_windows(tokens_N, seq_len: int, max_windows: int | None = None):
  """Deterministic non-overlapping validation windows.

  Window w covers inputs ``tokens[wT : wT+T]`` and targets shifted by one; the incomplete tail
  is dropped. With ``max_windows`` smaller than the count, evenly spaced windows are kept.

  Returns:
    ``(inputs [W, T], targets [W, T])`` int32 numpy arrays.
  """
  tokens = np.asarray(tokens_N)
  idx = eval_window_starts(tokens.shape[0], seq_len, max_windows)[:, None] + np.arange(
      seq_len + 1)[None, :]
  windows = tokens[idx].astype(np.int32)
  return windows[:, :-1], windows[:, 1:]



def eval_window_starts(num_tokens: int, seq_len: int, max_windows: int | None = None):
  """Start index ``wT`` of each window :func:`eval_windows` keeps (int64 numpy array); the
  window's targets are the tokens at ``wT + 1 .. wT + T``."""
  count = (num_tokens - 1) // seq_len
  if count < 1:
    raise ValueError(f"split of {num_tokens} tokens is too short for seq_len={seq_len}")
  which = np.arange(count)
  if max_windows is not None and max_windows < count:
    which = np.unique(np.linspace(0, count - 1, max_windows).round().astype(np.int64))
  return which * seq_len
