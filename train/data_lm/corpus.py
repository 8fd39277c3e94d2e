"""The corpus type every data source returns, its error type and the 90/10 split."""

from __future__ import annotations

import dataclasses

import numpy as np

TRAIN_FRACTION = 0.9


class DataError(ValueError):
  """A corpus cannot be built or loaded; the message names the dataset or file."""


@dataclasses.dataclass
class Corpus:
  """A tokenised corpus: contiguous uint8 byte arrays per split.

  Attributes:
    train: uint8 ``[N_train]`` training bytes.
    val: uint8 ``[N_val]`` validation bytes.
    name: the name or spec it was loaded from.
    num_bytes: total bytes over all splits (filled in when None).
    test: optional uint8 test bytes.
    meta: extra facts (source, python version, entropy rate for ``synthetic_markov``...).
  """

  train: np.ndarray
  val: np.ndarray
  name: str
  num_bytes: int | None = None
  test: np.ndarray | None = None
  meta: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    self.train = _as_bytes_array(self.train)
    self.val = _as_bytes_array(self.val)
    if self.test is not None:
      self.test = _as_bytes_array(self.test)
    if self.num_bytes is None:
      self.num_bytes = int(self.train.size + self.val.size
                           + (0 if self.test is None else self.test.size))


def _as_bytes_array(x) -> np.ndarray:
  if isinstance(x, (bytes, bytearray, memoryview)):
    return np.frombuffer(bytes(x), dtype=np.uint8).copy()
  return np.asarray(x, dtype=np.uint8)


def split_bytes(data: bytes, train_fraction: float = TRAIN_FRACTION):
  """Contiguous split: the first ``floor(fraction * n)`` bytes train, the rest validation."""
  cut = int(train_fraction * len(data))
  return data[:cut], data[cut:]


def min_corpus_bytes(seq_len: int) -> int:
  """Fewest bytes whose 90/10 split leaves both splits one window (``seq_len + 1`` bytes)."""
  need, n = seq_len + 1, seq_len + 1
  while min(int(TRAIN_FRACTION * n), n - int(TRAIN_FRACTION * n)) < need:  # as split_bytes
    n += 1
  return n


def one_line(err: BaseException, limit: int = 200) -> str:
  """``'TypeName: first line of the message'`` (cut at ``limit`` characters)."""
  text = str(err).strip().splitlines()
  msg = text[0] if text else ""
  if len(msg) > limit:
    msg = msg[:limit] + "..."
  return f"{type(err).__name__}: {msg}" if msg else type(err).__name__
