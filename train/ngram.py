"""Byte-level n-gram baselines: validation bits per byte of add-k and Kneser-Ney models.

Vocabulary: all V = 256 byte values. An n-gram model predicts byte ``w`` from its history
``h``, the ``n - 1`` bytes before it; ``c(.)`` counts occurrences in the training bytes and
``c(h) = sum_w c(h w)`` (so a history seen only at the very end of the training bytes counts 0).

**Add-k** (order n, k > 0)::

    P(w | h) = (c(h w) + k) / (c(h) + k V)

k is chosen per order among :data:`ADDK_CANDIDATES` (1, 0.1, 0.01, 0.001) on a *held-out part
of the training bytes*: counts from the first ``1 - HELDOUT_FRACTION`` (90 %) of the training
bytes score the last 10 %; the k with the lowest held-out bpb is kept, and the model is then
recounted on all training bytes. Validation bytes are never used to choose k
(:func:`select_addk` does not receive them).

**Interpolated Kneser-Ney** (Chen & Goodman 1998, one discount per order). With ``h'`` the
history without its first byte, the order-m estimate is::

    P_m(w | h) = max(a(h w) - D_m, 0) / A(h) + D_m T(h) / A(h) * P_{m-1}(w | h')
    P_0(w)     = 1 / V

where, at the top order m = n, ``a(h w) = c(h w)`` (raw counts) and, at lower orders m < n,
``a(h w) = N1+(. h w)``, the number of distinct bytes seen before ``h w`` (continuation counts);
``A(h) = sum_w a(h w)`` and ``T(h) = |{w : a(h w) > 0}|``. Where ``A(h) = 0`` (history unseen)
``P_m(w | h) = P_{m-1}(w | h')``. The discount of each order and count type is the standard
``D_m = n1 / (n1 + 2 n2)``, with n1 and n2 the numbers of m-grams whose count ``a`` is exactly
1 and 2 (``D_m = 0.5`` where that is undefined or 0, e.g. a corpus without singletons). Each
``P_m(. | h)`` sums to 1 over the 256 bytes, since the discounted mass ``D_m T(h) / A(h)`` is
exactly what the interpolation hands to ``P_{m-1}``.

**Scoring.** ``bpb = -mean(log2 P(x_i | history_i))`` over the scored positions. A position with
fewer than ``n - 1`` bytes of history (the stream start, or a window start given by ``starts``)
is scored with the history it has: add-k with the order it can fill (same k), Kneser-Ney by
stopping the recursion at that order. N-grams are encoded exactly as int64 keys
``sum_j x_{i+j} 256^(m-1-j)`` (m <= 7) and counted with ``np.unique``; lookups are
``np.searchsorted``; no Python loop runs over bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Sequence

import numpy as np

V = 256
ORDERS = (1, 2, 3, 4, 5)
ADDK_CANDIDATES = (1.0, 0.1, 0.01, 0.001)
HELDOUT_FRACTION = 0.1
MAX_ORDER = 7  # 256^7 keys fit in int64
VERSION = 1  # bump when the numbers a cache holds would change


def gram_keys(data: np.ndarray, m: int) -> np.ndarray:
  """int64 key of every m-gram ``data[i:i+m]`` (``i = 0 .. N - m``), base 256, first byte
  most significant."""
  x = np.asarray(data).astype(np.int64)
  n = x.size - m + 1
  keys = np.zeros(max(n, 0), np.int64)
  for j in range(m):
    keys = keys * V + x[j:j + n]
  return keys


@dataclasses.dataclass
class Table:
  """Sorted distinct keys with their counts (``lookup`` of absent keys is 0)."""

  keys: np.ndarray
  counts: np.ndarray

  @classmethod
  def of(cls, keys: np.ndarray) -> "Table":
    u, c = np.unique(keys, return_counts=True)
    return cls(u, c.astype(np.int64))

  def lookup(self, query: np.ndarray) -> np.ndarray:
    if not self.keys.size:
      return np.zeros(query.shape, np.int64)
    i = np.minimum(np.searchsorted(self.keys, query), self.keys.size - 1)
    return np.where(self.keys[i] == query, self.counts[i], 0)

  def discount(self) -> float:
    """``n1 / (n1 + 2 n2)`` over these counts (0.5 where undefined or 0)."""
    n1, n2 = int(np.sum(self.counts == 1)), int(np.sum(self.counts == 2))
    return n1 / (n1 + 2 * n2) if n1 > 0 else 0.5


@dataclasses.dataclass
class Level:
  """One order's counts ``a(h w)`` (raw or continuation) with per-history sums ``A(h)`` and
  distinct followers ``T(h)``, history key = gram key // 256."""

  grams: Table
  total: Table     # A(h)
  distinct: Table  # T(h)
  discount: float

  @classmethod
  def of(cls, grams: Table) -> "Level":
    hist = grams.keys // V  # sorted, since grams.keys is
    h, start = np.unique(hist, return_index=True)
    total = np.add.reduceat(grams.counts, start) if h.size else np.zeros(0, np.int64)
    distinct = np.diff(np.append(start, hist.size))
    return cls(grams, Table(h, total), Table(h, distinct), grams.discount())


class Counts:
  """N-gram counts of ``train`` for orders ``1 .. max_order``: ``raw[m]`` (c) and ``cont[m]``
  (N1+(. g), for m < max_order)."""

  def __init__(self, train: np.ndarray, max_order: int):
    if not 1 <= max_order <= MAX_ORDER:
      raise ValueError(f"n-gram order must be in 1..{MAX_ORDER}, got {max_order}")
    self.max_order = max_order
    self.raw = {m: Level.of(Table.of(gram_keys(train, m))) for m in range(1, max_order + 1)}
    self.cont = {}
    for m in range(1, max_order):
      longer = self.raw[m + 1].grams.keys  # each distinct (m+1)-gram once: drop its first byte
      self.cont[m] = Level.of(Table.of(longer % (V ** m)))


def contexts(stream: np.ndarray, positions: np.ndarray, order: int,
             starts: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """``(grams [P, order], avail [P])``: ``stream[p - order + 1 .. p]`` for each position p
  (entries before the stream start or ``starts[p]`` are 0) and how many history bytes are
  usable, ``min(order - 1, p - start)``."""
  stream = np.asarray(stream).astype(np.int64)
  positions = np.asarray(positions, np.int64)
  start = np.zeros_like(positions) if starts is None else np.asarray(starts, np.int64)
  idx = positions[:, None] + np.arange(1 - order, 1)[None, :]
  grams = np.where(idx >= start[:, None], stream[np.clip(idx, 0, None)], 0)
  return grams, np.minimum(order - 1, positions - start)


def _key(grams: np.ndarray, m: int) -> np.ndarray:
  """Key of the last m columns (the m-gram ending at the predicted byte)."""
  key = np.zeros(grams.shape[0], np.int64)
  for j in range(grams.shape[1] - m, grams.shape[1]):
    key = key * V + grams[:, j]
  return key


def addk_prob(counts: Counts, grams: np.ndarray, avail: np.ndarray, k: float) -> np.ndarray:
  """Add-k ``P(w | h)`` of order ``grams.shape[1]`` (``w`` the last column); positions with
  ``avail`` history bytes use order ``avail + 1``."""
  order = grams.shape[1]
  used = np.minimum(order, avail + 1)
  p = np.zeros(grams.shape[0])
  for m in range(1, order + 1):
    rows = used == m
    if not rows.any():
      continue
    key = _key(grams[rows], m)
    level = counts.raw[m]
    c, ch = level.grams.lookup(key), level.total.lookup(key // V)
    p[rows] = (c + k) / (ch + k * V)
  return p


def kn_prob(counts: Counts, grams: np.ndarray, avail: np.ndarray) -> np.ndarray:
  """Interpolated Kneser-Ney ``P(w | h)`` of order ``grams.shape[1]`` (see the module doc);
  positions with ``avail`` history bytes use the model of order ``avail + 1``."""
  order = grams.shape[1]
  used = np.minimum(order, avail + 1)  # each position's top order: raw counts there
  p = np.full(grams.shape[0], 1.0 / V)
  for m in range(1, order + 1):
    key = _key(grams, m)
    new = p.copy()
    for level, rows in ((counts.raw[m], used == m), (counts.cont.get(m), used > m)):
      if level is None or not rows.any():
        continue
      k, h, lower = key[rows], key[rows] // V, p[rows]
      a, big_a, t = level.grams.lookup(k), level.total.lookup(h), level.distinct.lookup(h)
      d, seen = level.discount, big_a > 0
      new[rows] = np.where(seen, (np.maximum(a - d, 0) + d * t * lower)
                           / np.where(seen, big_a, 1), lower)
    p = new
  return p


def bits(prob: np.ndarray) -> float:
  """Mean ``-log2`` probability."""
  return float(-np.mean(np.log2(prob))) if prob.size else float("nan")


def select_addk(train: np.ndarray, orders: Sequence[int] = ORDERS,
                candidates: Sequence[float] = ADDK_CANDIDATES,
                heldout_fraction: float = HELDOUT_FRACTION) -> dict[int, dict]:
  """Per order, the add-k ``k`` with the lowest bpb on the last ``heldout_fraction`` of the
  *training* bytes, counted on the rest: ``{n: {"k": k, "heldout_bpb": {k: bpb}}}``."""
  train = np.asarray(train, np.uint8)
  cut = int(round((1 - heldout_fraction) * train.size))
  fit, held = train[:cut], train[cut:]
  if not fit.size or not held.size:
    raise ValueError(f"{train.size} training bytes are too few to hold out a part for add-k")
  counts = Counts(fit, max(orders))
  out = {}
  for n in orders:
    grams, avail = contexts(held, np.arange(held.size), n)
    scores = {k: bits(addk_prob(counts, grams, avail, k)) for k in candidates}
    out[n] = {"k": min(scores, key=scores.get), "heldout_bpb": scores}
  return out


def ngram_bpb(train: np.ndarray, val: np.ndarray, orders: Sequence[int] = ORDERS, *,
              positions: np.ndarray | None = None, starts: np.ndarray | None = None) -> dict:
  """Validation bpb of add-k (held-out k) and Kneser-Ney models of each order.

  Args:
    train: uint8 training bytes (counts; add-k's k is chosen on their last 10 %).
    val: uint8 validation bytes.
    orders: n-gram orders.
    positions: indices of ``val`` to score (default: all).
    starts: per position, the index of ``val`` where its usable history begins (default 0;
      the LM task passes its evaluation windows' starts, so no history crosses a window).

  Returns:
    ``{"addk": {n: bpb}, "addk_k": {n: k}, "addk_heldout": {n: {k: bpb}}, "kn": {n: bpb},
    "kn_discounts": {n: [D_1 .. D_n]}, "scored_bytes": P, "train_bytes": N, "seconds": s}``.
  """
  t0 = time.time()
  train, val = np.asarray(train, np.uint8), np.asarray(val, np.uint8)
  positions = np.arange(val.size) if positions is None else np.asarray(positions, np.int64)
  chosen = select_addk(train, orders)
  counts = Counts(train, max(orders))
  out = {"addk": {}, "addk_k": {}, "addk_heldout": {}, "kn": {}, "kn_discounts": {}}
  for n in orders:
    grams, avail = contexts(val, positions, n, starts)
    k = chosen[n]["k"]
    out["addk"][n] = bits(addk_prob(counts, grams, avail, k))
    out["addk_k"][n] = k
    out["addk_heldout"][n] = chosen[n]["heldout_bpb"]
    out["kn"][n] = bits(kn_prob(counts, grams, avail))
    out["kn_discounts"][n] = [(counts.raw[m] if m == n else counts.cont[m]).discount
                              for m in range(1, n + 1)]
  out.update(scored_bytes=int(positions.size), train_bytes=int(train.size),
             seconds=round(time.time() - t0, 3))
  return out


def metrics(result: dict) -> dict[str, float]:
  """Flat reference metrics of an :func:`ngram_bpb` result: ``ngram_addk_bpb@n=4``,
  ``ngram_kn_bpb@n=4``, ``ngram_addk_k@n=4`` ..."""
  out = {}
  for n in sorted(int(n) for n in result["addk"]):
    out[f"ngram_addk_bpb@n={n}"] = float(result["addk"][_k(result["addk"], n)])
    out[f"ngram_kn_bpb@n={n}"] = float(result["kn"][_k(result["kn"], n)])
    out[f"ngram_addk_k@n={n}"] = float(result["addk_k"][_k(result["addk_k"], n)])
  return out


def _k(d: dict, n: int):
  return n if n in d else str(n)  # int keys in memory, str keys after JSON


def cached_ngram_bpb(train: np.ndarray, val: np.ndarray, cache_dir: str | os.PathLike | None,
                     orders: Sequence[int] = ORDERS, *, positions: np.ndarray | None = None,
                     starts: np.ndarray | None = None) -> dict:
  """:func:`ngram_bpb`, saved as ``ngram-<digest>.json`` under ``cache_dir`` and reused; the
  digest covers the training and validation bytes, the scored positions, their starts, the
  orders and :data:`VERSION`."""
  if cache_dir is None:
    return ngram_bpb(train, val, orders, positions=positions, starts=starts)
  h = hashlib.sha1(f"v{VERSION} orders={list(orders)}".encode())
  for arr, dtype in ((train, np.uint8), (val, np.uint8), (positions, np.int64),
                     (starts, np.int64)):
    h.update(b"|" if arr is None else np.ascontiguousarray(arr, dtype).tobytes() + b"|")
  path = os.path.join(cache_dir, f"ngram-{h.hexdigest()[:16]}.json")
  if os.path.isfile(path):
    with open(path) as f:
      return json.load(f)
  result = ngram_bpb(train, val, orders, positions=positions, starts=starts)
  os.makedirs(cache_dir, exist_ok=True)
  tmp = f"{path}.{os.getpid()}.tmp"
  with open(tmp, "w") as f:
    json.dump(result, f, indent=1)
  os.replace(tmp, path)
  return json.loads(json.dumps(result))  # the same (string-keyed) form a cache hit returns


def table(result: dict) -> str:
  """Markdown table of an :func:`ngram_bpb` result (orders as columns)."""
  orders = sorted(int(n) for n in result["addk"])
  head = "| model | " + " | ".join(f"n={n}" for n in orders) + " |"
  rule = "|---|" + "---|" * len(orders)
  addk = " | ".join(f"{result['addk'][_k(result['addk'], n)]:.3f} "
                    f"(k={result['addk_k'][_k(result['addk_k'], n)]:g})" for n in orders)
  kn = " | ".join(f"{result['kn'][_k(result['kn'], n)]:.3f}" for n in orders)
  return "\n".join([head, rule, f"| add-k (k chosen on held-out train) | {addk} |",
                    f"| interpolated Kneser-Ney | {kn} |"])
