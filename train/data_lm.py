"""Byte-level language-modelling data (studies.md §3.1).

* Offline corpora built from Python itself (:data:`CORPORA`): ``pydoc``, ``stdlib_src``, ``zen``
  and ``synthetic_markov`` (a seeded order-k Markov chain whose exact entropy rate,
  :func:`markov_entropy_rate`, is the bits-per-byte floor).
* Hugging Face hub datasets (:data:`HUB_DATASETS`, :func:`load_hub`) with the fallback chain for
  script-based repositories, and local files through ``datasets`` (:func:`load_text_files`).
* :func:`load_corpus` resolves a name or spec to a :class:`Corpus` of uint8 arrays, optionally
  cached in a work directory.
* :func:`sample_windows` draws a training batch as a pure function of ``(seed, step)``;
  :func:`eval_windows` cuts deterministic non-overlapping validation windows.

Tokens are bytes (vocabulary 256); text is UTF-8 encoded.
"""

from __future__ import annotations

import bisect
import codecs
import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import os
import pathlib
import sys
import sysconfig
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

CORPORA = ("pydoc", "stdlib_src", "zen", "synthetic_markov")
"""Offline corpora, built from the running Python installation."""

TRAIN_FRACTION = 0.9
SCRIPT_ERROR = "Dataset scripts are no longer supported"
PARQUET_REVISION = "refs/convert/parquet"


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


# ------------------------------------------------------------------------------------------------
# Offline corpora.


def pydoc_bytes() -> bytes:
  """``pydoc_data.topics.topics`` values in sorted-key order, UTF-8, joined with ``b"\\n\\n"``."""
  from pydoc_data import topics  # pylint: disable=import-outside-toplevel
  return b"\n\n".join(topics.topics[k].encode("utf-8") for k in sorted(topics.topics))


def zen_bytes() -> bytes:
  """The Zen of Python: ROT13-decoded ``this.s`` (the import's print is swallowed)."""
  with contextlib.redirect_stdout(io.StringIO()):
    import this  # pylint: disable=import-outside-toplevel
  return codecs.decode(this.s, "rot_13").encode("utf-8")


def stdlib_files(recursive: bool = False) -> list[pathlib.Path]:
  """The ``*.py`` files of ``sysconfig.get_paths()["stdlib"]``, sorted by (relative) name."""
  root = pathlib.Path(sysconfig.get_paths()["stdlib"])
  files = root.rglob("*.py") if recursive else root.glob("*.py")
  return sorted((p for p in files if p.is_file()), key=lambda p: p.relative_to(root).as_posix())


def stdlib_src_bytes(recursive: bool = False) -> bytes:
  """The standard library's source files (raw bytes) joined with ``b"\\n\\n"``."""
  return b"\n\n".join(p.read_bytes() for p in stdlib_files(recursive))


# ------------------------------------------------------------------------------------------------
# Synthetic order-k Markov chain.


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


# ------------------------------------------------------------------------------------------------
# Hugging Face hub datasets.


@dataclasses.dataclass(frozen=True)
class HubDataset:
  """One row of studies.md §3.1's hub table.

  Attributes:
    hub_id: repository id on the hub.
    config: configuration (subset) name, or None.
    notes: the table's notes.
    text_column: column holding the text (falls back to the only string column).
    joiner: string joining rows of a split (wikitext rows already end in a newline).
    streaming: load with ``streaming=True`` (then ``max_bytes`` bounds what is read).
    script_based: a loading-script repository (needs the fallback chain on datasets >= 4).
    raw_url: the raw file used by the fallback chain.
    split_sizes: byte sizes (train, val[, test]) when only one text is available; None means
      a 90/10 contiguous split.
  """

  hub_id: str
  config: str | None = None
  notes: str = ""
  text_column: str = "text"
  joiner: str = "\n\n"
  streaming: bool = False
  script_based: bool = False
  raw_url: str | None = None
  split_sizes: tuple[int, ...] | None = None


HUB_DATASETS: dict[str, HubDataset] = {
    "wikitext2": HubDataset(
        "Salesforce/wikitext", "wikitext-2-raw-v1", joiner="",
        notes="Parquet; train / validation / test (wikitext-2-v1: tokenised, with <unk>)"),
    "wikitext2_tok": HubDataset(
        "Salesforce/wikitext", "wikitext-2-v1", joiner="",
        notes="Parquet; tokenised WikiText-2 with <unk>"),
    "wikitext103": HubDataset(
        "Salesforce/wikitext", "wikitext-103-raw-v1", joiner="",
        notes="Parquet; shares validation and test with WikiText-2 (wikitext-103-v1: tokenised)"),
    "wikitext103_tok": HubDataset(
        "Salesforce/wikitext", "wikitext-103-v1", joiner="",
        notes="Parquet; tokenised WikiText-103 with <unk>"),
    "wikitext2_doc": HubDataset(
        "EleutherAI/wikitext_document_level", "wikitext-2-raw-v1", text_column="page",
        notes="what lm-eval-harness scores; one row per article"),
    "tinystories": HubDataset(
        "roneneldan/TinyStories", notes="train / validation; stories joined with blank lines"),
    "text8": HubDataset(
        "afmck/text8", split_sizes=(90_000_000, 5_000_000, 5_000_000),
        notes="community Parquet copy: train / validation / test, one row each (90M / 5M / 5M)"),
    "fineweb_edu": HubDataset(
        "HuggingFaceFW/fineweb-edu", "sample-10BT", streaming=True,
        notes="streaming=True; only a train split: the first max_bytes are read, split 90/10"),
    "tiny_shakespeare": HubDataset(
        "karpathy/tiny_shakespeare", script_based=True,
        raw_url=("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                 "tinyshakespeare/input.txt"),
        notes="script-based; raw fallback: char-rnn input.txt split 90/10"),
    "enwik8": HubDataset(
        "LTCB/enwik8", "enwik8-raw", script_based=True,
        raw_url="http://mattmahoney.net/dc/enwik8.zip",
        split_sizes=(90_000_000, 5_000_000, 5_000_000),
        notes="script-based; raw fallback: mattmahoney.net enwik8.zip split 90M / 5M / 5M bytes"),
}
"""Hub table of studies.md §3.1 (key -> :class:`HubDataset`)."""

DEFAULT_STREAM_BYTES = 100_000_000
_VAL_NAMES = ("validation", "valid", "val", "dev")


def _one_line(err: BaseException, limit: int = 200) -> str:
  text = str(err).strip().splitlines()
  msg = text[0] if text else ""
  if len(msg) > limit:
    msg = msg[:limit] + "..."
  return f"{type(err).__name__}: {msg}" if msg else type(err).__name__


def _datasets_major() -> int:
  import datasets  # pylint: disable=import-outside-toplevel
  return int(datasets.__version__.split(".")[0])


def _text_column(ds, preferred: str) -> str:
  if ds.column_names is None:  # streaming without known features: trust the table
    return preferred
  names = list(ds.column_names)
  if preferred in names:
    return preferred
  features = getattr(ds, "features", None) or {}
  strings = [n for n in names
             if getattr(features.get(n), "dtype", None) in ("string", "large_string")]
  if len(strings) == 1:
    return strings[0]
  raise DataError(f"no text column {preferred!r} among {names}; pass text_column=")


def _split_text(ds, column: str, joiner: str, max_bytes: int | None) -> bytes:
  """Join a split's rows into bytes, stopping after ``max_bytes`` when given."""
  import datasets  # pylint: disable=import-outside-toplevel
  if max_bytes is None and isinstance(ds, datasets.IterableDataset):
    max_bytes = DEFAULT_STREAM_BYTES
  if max_bytes is None:
    return joiner.join(ds[column]).encode("utf-8")
  parts, total, sep = [], 0, joiner.encode("utf-8")
  for row in ds:
    b = row[column].encode("utf-8")
    parts.append(b)
    total += len(b) + len(sep)
    if total >= max_bytes:
      break
  return sep.join(parts)[:max_bytes]


def _splits_from_single(data: bytes, sizes: tuple[int, ...] | None):
  """(train, val, test) from one text: by byte sizes, or 90/10 without a test split."""
  if sizes is None:
    train, val = split_bytes(data)
    return train, val, None
  a, b = sizes[0], sizes[0] + sizes[1]
  test = data[b:b + sizes[2]] if len(sizes) > 2 else None
  return data[:a], data[a:b], test


def _corpus_from_dataset_dict(dd, key: str, spec: HubDataset, max_bytes: int | None) -> Corpus:
  names = list(dd.keys())
  if "train" not in names:
    raise DataError(f"hub dataset {key!r} ({spec.hub_id}) has no train split (splits: {names})")
  column = _text_column(dd["train"], spec.text_column)
  train = _split_text(dd["train"], column, spec.joiner, max_bytes)
  val_name = next((n for n in _VAL_NAMES if n in names), None)
  if val_name is None:  # a truncated text is split 90/10, a whole one by the table's sizes
    sizes = spec.split_sizes if max_bytes is None else None
    train, val, test = _splits_from_single(train, sizes)
  else:
    val = _split_text(dd[val_name], column, spec.joiner, None)
    test = _split_text(dd["test"], column, spec.joiner, None) if "test" in names else None
  return Corpus(train, val, name=key, test=test,
                meta={"source": "hub", "hub_id": spec.hub_id, "config": spec.config})


def fetch_url(url: str) -> bytes:
  """Download (and unpack) a raw file through ``datasets.DownloadManager``; returns its bytes."""
  import datasets  # pylint: disable=import-outside-toplevel
  path = datasets.DownloadManager().download_and_extract(url)
  path = pathlib.Path(path)
  if path.is_dir():
    files = sorted(p for p in path.rglob("*") if p.is_file())
    if len(files) != 1:
      raise DataError(f"{url} unpacked to {len(files)} files, expected one")
    path = files[0]
  return path.read_bytes()


def _script_fallback(key: str, spec: HubDataset, first_err: BaseException, max_bytes, **kw):
  """datasets >= 4 refused a script: parquet conversion, then the raw file, then advice."""
  import datasets  # pylint: disable=import-outside-toplevel
  tried = [f"loading script: {_one_line(first_err, 120)}"]
  try:
    dd = datasets.load_dataset(spec.hub_id, spec.config, revision=PARQUET_REVISION, **kw)
    return _corpus_from_dataset_dict(dd, key, spec, max_bytes)
  except Exception as err:  # pylint: disable=broad-except
    tried.append(f"revision={PARQUET_REVISION!r}: {_one_line(err, 120)}")
  if spec.raw_url:
    try:
      data = fetch_url(spec.raw_url)
      train, val, test = _splits_from_single(data, spec.split_sizes)
      return Corpus(train, val, name=key, test=test,
                    meta={"source": "raw", "url": spec.raw_url, "hub_id": spec.hub_id})
    except Exception as err:  # pylint: disable=broad-except
      tried.append(f"raw file {spec.raw_url}: {_one_line(err, 120)}")
  raise DataError(
      f"cannot load script-based hub dataset {key!r} ({spec.hub_id}) with datasets "
      f"{datasets.__version__}; tried {'; '.join(tried)}. Install datasets<4 "
      "(pip install 'datasets<4'; 3.6.0 works) or pass the text as local files.")


def load_hub(key: str, *, max_bytes: int | None = None, hf_cache_dir: str | None = None,
             streaming: bool | None = None) -> Corpus:
  """Load a dataset of :data:`HUB_DATASETS` through ``datasets.load_dataset``.

  Args:
    key: a key of :data:`HUB_DATASETS`.
    max_bytes: read at most this many training bytes (streaming datasets default to 100 MB).
    hf_cache_dir: ``cache_dir`` passed to ``datasets`` (default: its own cache).
    streaming: override the table's streaming flag.

  Returns:
    A :class:`Corpus`; datasets without a validation split are split contiguously.

  Raises:
    DataError: one line naming the dataset (no network, offline mode, unknown key, or a
      script-based repository whose fallbacks all failed).
  """
  if key not in HUB_DATASETS:
    raise DataError(f"unknown hub dataset {key!r}; known: {', '.join(HUB_DATASETS)}")
  spec = HUB_DATASETS[key]
  import datasets  # pylint: disable=import-outside-toplevel
  kw: dict[str, Any] = {}
  if hf_cache_dir is not None:
    kw["cache_dir"] = str(hf_cache_dir)
  stream = spec.streaming if streaming is None else streaming
  first_kw = dict(kw, streaming=True) if stream else dict(kw)
  if spec.script_based and _datasets_major() < 4:
    first_kw["trust_remote_code"] = True
  try:
    dd = datasets.load_dataset(spec.hub_id, spec.config, **first_kw)
  except Exception as err:  # pylint: disable=broad-except
    if SCRIPT_ERROR in str(err):
      return _script_fallback(key, spec, err, max_bytes, **kw)
    offline = [v for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
               if os.environ.get(v, "").lower() in ("1", "true", "yes", "on")]
    hint = f" ({'/'.join(offline)} set)" if offline else ""
    raise DataError(
        f"cannot load hub dataset {key!r} ({spec.hub_id}"
        f"{', ' + spec.config if spec.config else ''}): {_one_line(err)}. No network or "
        f"offline mode{hint}? Use an offline corpus ({', '.join(CORPORA)}) or local files."
    ) from None
  return _corpus_from_dataset_dict(dd, key, spec, max_bytes)


# ------------------------------------------------------------------------------------------------
# Local files through `datasets`.

_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def _as_list(files) -> list[str]:
  if files is None:
    return []
  if isinstance(files, (str, os.PathLike)):
    return [os.fspath(files)]
  return [os.fspath(f) for f in files]


def _check_local(path: str):
  if "://" in path or any(c in path for c in "*?["):
    return
  if not os.path.isfile(path):
    raise DataError(f"data file not found: {path}")


def load_text_files(train_files, val_files=None, *, test_files=None,
                    text_column: str = "text", joiner: str = "\n\n",
                    hf_cache_dir: str | None = None, name: str | None = None) -> Corpus:
  """Load local files with ``datasets.load_dataset`` (``text``, or ``parquet``/``json`` by
  extension) and encode them as bytes.

  Text files are read whole (``sample_by="document"``) so bytes survive exactly; files and
  rows are joined with ``joiner``. Without ``val_files`` the training text is split 90/10.

  Raises:
    DataError: a missing file (named), mixed extensions, or no text column.
  """
  import datasets  # pylint: disable=import-outside-toplevel
  splits = {"train": _as_list(train_files), "validation": _as_list(val_files),
            "test": _as_list(test_files)}
  splits = {k: v for k, v in splits.items() if v}
  if "train" not in splits:
    raise DataError("load_text_files needs at least one training file")
  for files in splits.values():
    for f in files:
      _check_local(f)
  exts = {os.path.splitext(f)[1].lower() for files in splits.values() for f in files}
  builders = {_BUILDERS.get(e, "text") for e in exts}
  if len(builders) != 1:
    raise DataError(f"mixed file types {sorted(exts)}; use one format per corpus")
  builder = builders.pop()
  kw: dict[str, Any] = {"data_files": splits}
  if builder == "text":
    kw["sample_by"] = "document"
  if hf_cache_dir is not None:
    kw["cache_dir"] = str(hf_cache_dir)
  try:
    dd = datasets.load_dataset(builder, **kw)
  except FileNotFoundError as err:
    raise DataError(f"data file not found: {_one_line(err)}") from None
  spec = HubDataset(hub_id=builder, text_column=text_column, joiner=joiner)
  corpus = _corpus_from_dataset_dict(dd, name or "files", spec, None)
  corpus.meta = {"source": "files", "builder": builder,
                 "files": {k: [os.path.abspath(f) if "://" not in f else f for f in v]
                           for k, v in splits.items()}}
  return corpus


# ------------------------------------------------------------------------------------------------
# Name / spec resolution and caching.


def _parse_value(v: str):
  low = v.lower()
  if low in ("true", "yes"):
    return True
  if low in ("false", "no"):
    return False
  for cast in (int, float):
    try:
      return cast(v)
    except ValueError:
      pass
  return v


def parse_spec(name_or_spec: str) -> tuple[str, dict[str, Any]]:
  """``"name:k=v,k=v"`` -> ``(name, {k: v})`` (values parsed as bool/int/float/str)."""
  name, _, rest = str(name_or_spec).partition(":")
  opts = {}
  for item in filter(None, (s.strip() for s in rest.split(","))):
    k, eq, v = item.partition("=")
    if not eq:
      raise DataError(f"bad corpus option {item!r} in {name_or_spec!r} (expected key=value)")
    opts[k.strip()] = _parse_value(v.strip())
  return name.strip(), opts


_MARKOV_DEFAULTS = {"num_bytes": 1_000_000, "order": 2, "vocab": 16, "seed": 0,
                    "concentration": 0.25}


def _check_opts(name: str, opts: Mapping[str, Any], allowed) -> None:
  bad = sorted(set(opts) - set(allowed))
  if bad:
    raise DataError(f"unknown option(s) {bad} for corpus {name!r}; allowed: {sorted(allowed)}")


def _build(name: str, opts: dict[str, Any], data_files, hf_cache_dir) -> Corpus:
  py = sys.version.split()[0]
  if name == "pydoc":
    _check_opts(name, opts, ())
    train, val = split_bytes(pydoc_bytes())
    return Corpus(train, val, name=name, meta={"source": "pydoc_data.topics", "python": py})
  if name == "zen":
    _check_opts(name, opts, ())
    train, val = split_bytes(zen_bytes())
    return Corpus(train, val, name=name, meta={"source": "this.s", "python": py})
  if name == "stdlib_src":
    _check_opts(name, opts, ("recursive",))
    recursive = bool(opts.get("recursive", False))
    train, val = split_bytes(stdlib_src_bytes(recursive))
    return Corpus(train, val, name=name, meta={"source": "stdlib", "python": py,
                                               "recursive": recursive,
                                               "num_files": len(stdlib_files(recursive))})
  if name == "synthetic_markov":
    _check_opts(name, opts, _MARKOV_DEFAULTS)
    o = {**_MARKOV_DEFAULTS, **opts}
    train, val = split_bytes(markov_bytes(**o))
    rate = markov_entropy_rate(o["order"], o["vocab"], o["seed"], o["concentration"])
    return Corpus(train, val, name=name, meta={"source": "markov", **o,
                                               "entropy_rate_bits": rate})
  if name in ("files", "text") or data_files is not None:
    _check_opts(name, opts, ("text_column", "joiner"))
    if data_files is None:
      raise DataError(f"corpus {name!r} needs data_files=")
    if isinstance(data_files, Mapping):
      train = data_files.get("train")
      val = next((data_files[k] for k in _VAL_NAMES if k in data_files), None)
      test = data_files.get("test")
    else:
      train, val, test = data_files, None, None
    return load_text_files(train, val, test_files=test, hf_cache_dir=hf_cache_dir,
                           name=name, **opts)
  hub_key = name[4:] if name.startswith("hub/") else name
  if hub_key in HUB_DATASETS:
    _check_opts(name, opts, ("max_bytes", "streaming"))
    return load_hub(hub_key, hf_cache_dir=hf_cache_dir, **opts)
  if os.path.splitext(name)[1] and (os.sep in name or os.path.exists(name)):
    return load_text_files([name], hf_cache_dir=hf_cache_dir, name=name, **opts)
  raise DataError(f"unknown corpus {name!r}; offline: {', '.join(CORPORA)}; hub: "
                  f"{', '.join(HUB_DATASETS)}; or 'files' with data_files=, or a file path")


def _cache_stem(name: str, opts: dict[str, Any], data_files) -> str:
  def describe(f):
    f = os.fspath(f)
    if os.path.isfile(f):
      st = os.stat(f)
      return [os.path.abspath(f), st.st_size, st.st_mtime_ns]
    return f
  files = None
  if data_files is not None:
    if isinstance(data_files, Mapping):
      files = {k: [describe(f) for f in _as_list(v)] for k, v in sorted(data_files.items())}
    else:
      files = [describe(f) for f in _as_list(data_files)]
  key = {"name": name, "opts": opts, "files": files, "python": sys.version.split()[0]}
  digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
  slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]
  return f"{slug}-{digest}"


def _save_atomic(path: pathlib.Path, arr: np.ndarray):
  tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
  with open(tmp, "wb") as f:
    np.save(f, arr)
  os.replace(tmp, path)


def load_corpus(name_or_spec: str, *, cache_dir: str | os.PathLike | None = None,
                data_files=None, hf_cache_dir: str | None = None) -> Corpus:
  """Resolve a corpus name or spec to a :class:`Corpus`.

  Accepted forms: an offline corpus of :data:`CORPORA` (``"pydoc"``, ``"zen"``,
  ``"stdlib_src:recursive=true"``, ``"synthetic_markov:order=3,vocab=8,seed=1"``); a key of
  :data:`HUB_DATASETS` (optionally ``"wikitext2:max_bytes=1000000"``); ``"files"`` with
  ``data_files`` (a path, a list, or a mapping with ``train`` / ``validation`` / ``test``);
  or a path to one local file.

  Args:
    name_or_spec: see above.
    cache_dir: if given, the byte arrays are saved there (``np.save``) and reused; the cache
      key covers the spec, file sizes/mtimes and the Python version.
    data_files: local files for ``"files"``.
    hf_cache_dir: cache directory for ``datasets``.
  """
  name, opts = parse_spec(name_or_spec)
  if cache_dir is None:
    return _build(name, opts, data_files, hf_cache_dir)
  cache = pathlib.Path(cache_dir)
  stem = _cache_stem(name, opts, data_files)
  meta_path = cache / f"{stem}.json"
  if meta_path.is_file():
    meta = json.loads(meta_path.read_text())
    arrays = {s: np.load(cache / f"{stem}.{s}.npy") for s in meta["splits"]}
    return Corpus(arrays["train"], arrays["val"], name=meta["name"], test=arrays.get("test"),
                  meta=dict(meta["meta"], cached=True))
  corpus = _build(name, opts, data_files, hf_cache_dir)
  cache.mkdir(parents=True, exist_ok=True)
  splits = ["train", "val"] + (["test"] if corpus.test is not None else [])
  for s in splits:
    _save_atomic(cache / f"{stem}.{s}.npy", getattr(corpus, s))
  meta = {"name": corpus.name, "splits": splits, "num_bytes": corpus.num_bytes,
          "meta": corpus.meta}
  tmp = meta_path.with_name(f"{meta_path.name}.{os.getpid()}.tmp")
  tmp.write_text(json.dumps(meta, indent=1, default=str))
  os.replace(tmp, meta_path)
  return corpus


# ------------------------------------------------------------------------------------------------
# Windows.


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
  count = (tokens.shape[0] - 1) // seq_len
  if count < 1:
    raise ValueError(f"split of {tokens.shape[0]} tokens is too short for seq_len={seq_len}")
  which = np.arange(count)
  if max_windows is not None and max_windows < count:
    which = np.unique(np.linspace(0, count - 1, max_windows).round().astype(np.int64))
  idx = which[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
  windows = tokens[idx].astype(np.int32)
  return windows[:, :-1], windows[:, 1:]


def bits_per_byte(mean_nll_nats: float) -> float:
  """Byte-level bits per byte from the mean NLL in nats per token."""
  return float(mean_nll_nats) / float(np.log(2.0))
