"""``synthetic_markov``: a seeded order-k Markov chain over a small alphabet whose exact entropy
rate (:func:`markov_entropy_rate`) is the bits-per-byte floor a model can reach."""

from __future__ import annotations

import bisect

import numpy as np

from attnlab.train.data_lm.corpus import Corpus, split_bytes

DEFAULTS = {"num_bytes": 1_000_000, "order": 2, "vocab": 16, "seed": 0, "concentration": 0.25}
"""The options of a ``synthetic_markov:k=v,...`` spec and their defaults."""


def markov_transitions(order: int = 2, vocab: int = 16, seed: int = 0,
                       concentration: float = 0.25) -> np.ndarray:
  """Transition table ``P [vocab**order, vocab]``, rows ~ Dirichlet(concentration).

  Context index of ``(a_1, ..., a_k)`` (oldest first) is ``sum_i a_i vocab**(k-i)``.
  """
  if not 1 <= vocab <= 256 or order < 0:
    raise ValueError(f"need 1 <= vocab <= 256 and order >= 0, got {vocab=}, {order=}")
  rng = np.random.default_rng([seed, 0])
  return rng.dirichlet(np.full(vocab, concentration), size=vocab**order)


def _next_context(order: int, vocab: int) -> np.ndarray:
  """``[S, vocab]`` index of the context after emitting symbol b in context s."""
  s = np.arange(vocab**order)[:, None]
  return (s * vocab + np.arange(vocab)[None, :]) % (vocab**order)


def markov_stationary(p: np.ndarray, order: int, vocab: int, tol: float = 1e-14,
                      max_iter: int = 100_000) -> np.ndarray:
  """Stationary distribution over contexts (power iteration, float64)."""
  n_ctx = vocab**order
  nxt = _next_context(order, vocab).ravel()
  pi = np.full(n_ctx, 1.0 / n_ctx)
  for _ in range(max_iter):
    new = np.bincount(nxt, weights=(pi[:, None] * p).ravel(), minlength=n_ctx)
    if np.abs(new - pi).sum() < tol:
      return new
    pi = new
  return pi


def markov_entropy_rate(order: int = 2, vocab: int = 16, seed: int = 0,
                        concentration: float = 0.25) -> float:
  """Exact entropy rate in bits per symbol (= bits per byte) of the chain."""
  p = markov_transitions(order, vocab, seed, concentration)
  pi = markov_stationary(p, order, vocab)
  row_h = -np.sum(np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0), axis=1)
  return float(pi @ row_h)


def markov_alphabet(vocab: int) -> bytes:
  """Byte of each symbol: lowercase letters when vocab <= 26, else bytes 0..vocab-1."""
  return bytes(range(97, 97 + vocab)) if vocab <= 26 else bytes(range(vocab))


def markov_bytes(num_bytes: int = 1_000_000, order: int = 2, vocab: int = 16, seed: int = 0,
                 concentration: float = 0.25) -> bytes:
  """A sample path of the chain (the first context drawn from the stationary distribution)."""
  p = markov_transitions(order, vocab, seed, concentration)
  pi = markov_stationary(p, order, vocab)
  rng = np.random.default_rng([seed, 1])
  cdf = np.cumsum(p, axis=1)
  cdf[:, -1] = 1.0
  cdf_rows = cdf.tolist()
  nxt = _next_context(order, vocab).tolist()
  ctx = int(rng.choice(vocab**order, p=pi / pi.sum()))
  out = bytearray(num_bytes)
  alphabet = markov_alphabet(vocab)
  for i, u in enumerate(rng.random(num_bytes).tolist()):
    b = min(bisect.bisect_right(cdf_rows[ctx], u), vocab - 1)
    out[i] = alphabet[b]
    ctx = nxt[ctx][b]
  return bytes(out)



def build(name: str, opts: dict) -> Corpus:
  o = {**DEFAULTS, **opts}
  train, val = split_bytes(markov_bytes(**o))
  rate = markov_entropy_rate(o["order"], o["vocab"], o["seed"], o["concentration"])
  return Corpus(train, val, name=name, meta={"source": "markov", **o, "entropy_rate_bits": rate})
