"""Hugging Face hub datasets (the hub table of experiments/lm_ablation/README.md §3.1,
:data:`HUB_DATASETS`).

Loading goes through ``datasets.load_dataset``. A script-based repository runs code from the
hub, so it is loaded with ``trust_remote_code=True`` only when the corpus spec asks for it
(``tiny_shakespeare:trust_remote_code=true``); on ``datasets`` >= 4, which runs no scripts, the
hub's Parquet conversion (revision ``refs/convert/parquet``) is tried instead. Nothing is
downloaded outside ``datasets``: for a raw file the error names its address, to be fetched and
checked by the user and passed as local files.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from attnlab.train.data_lm.corpus import Corpus, DataError, one_line, split_bytes

SCRIPT_ERROR = "Dataset scripts are no longer supported"
PARQUET_REVISION = "refs/convert/parquet"
OPTIONS = ("max_bytes", "streaming", "trust_remote_code")
"""The options of a hub corpus spec (``wikitext2:max_bytes=1000000``)."""


@dataclasses.dataclass(frozen=True)
class HubDataset:
  """One row of experiments/lm_ablation/README.md §3.1's hub table.

  Attributes:
    hub_id: repository id on the hub.
    config: configuration (subset) name, or None.
    notes: the table's notes.
    text_column: column holding the text (falls back to the only string column).
    joiner: string joining rows of a split (wikitext rows already end in a newline).
    streaming: load with ``streaming=True`` (then ``max_bytes`` bounds what is read).
    script_based: a loading-script repository (runs hub code; see the module docstring).
    raw_url: where the raw text lives, named in the error when the hub cannot serve it.
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
        notes="script-based; raw file: char-rnn input.txt, split 90/10"),
    "enwik8": HubDataset(
        "LTCB/enwik8", "enwik8-raw", script_based=True,
        raw_url="http://mattmahoney.net/dc/enwik8.zip",
        split_sizes=(90_000_000, 5_000_000, 5_000_000),
        notes="script-based; raw file: mattmahoney.net enwik8.zip, split 90M / 5M / 5M bytes"),
}
"""Hub table of experiments/lm_ablation/README.md §3.1 (key -> :class:`HubDataset`)."""

DEFAULT_STREAM_BYTES = 100_000_000
_VAL_NAMES = ("validation", "valid", "val", "dev")


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




def _script_fallback(key: str, spec: HubDataset, first_err: BaseException, max_bytes, **kw):
  """A script ``datasets`` would not run: the hub's Parquet conversion, else one line saying
  what to do (allow the script, or fetch the raw file and pass it as local files)."""
  import datasets  # pylint: disable=import-outside-toplevel
  tried = [f"loading script: {one_line(first_err, 120)}"]
  try:
    dd = datasets.load_dataset(spec.hub_id, spec.config, revision=PARQUET_REVISION, **kw)
    return _corpus_from_dataset_dict(dd, key, spec, max_bytes)
  except Exception as err:  # pylint: disable=broad-except
    tried.append(f"revision={PARQUET_REVISION!r}: {one_line(err, 120)}")
  advice = []
  if _datasets_major() < 4:
    advice.append(f"to run its loading script (code from the hub), pass the corpus as "
                  f"'{key}:trust_remote_code=true'")
  if spec.raw_url:
    advice.append(f"download {spec.raw_url} yourself, check it, and pass it as "
                  "data.data_files")
  else:
    advice.append("pass the text as local files (data.data_files)")
  raise DataError(f"cannot load script-based hub dataset {key!r} ({spec.hub_id}) with datasets "
                  f"{datasets.__version__}; tried {'; '.join(tried)}. Instead: "
                  f"{'; or '.join(advice)}.")


def load_hub(key: str, *, max_bytes: int | None = None, hf_cache_dir: str | None = None,
             streaming: bool | None = None, trust_remote_code: bool = False) -> Corpus:
  """Load a dataset of :data:`HUB_DATASETS` through ``datasets.load_dataset``.

  Args:
    key: a key of :data:`HUB_DATASETS`.
    max_bytes: read at most this many training bytes (streaming datasets default to 100 MB).
    hf_cache_dir: ``cache_dir`` passed to ``datasets`` (default: its own cache).
    streaming: override the table's streaming flag.
    trust_remote_code: let ``datasets`` run a script-based repository's loading code (only
      ever passed when True).

  Returns:
    A :class:`Corpus`; datasets without a validation split are split contiguously.

  Raises:
    DataError: one line naming the dataset (no network, offline mode, unknown key, or a
      script-based repository that could not be loaded).
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
  if trust_remote_code:
    first_kw["trust_remote_code"] = True
  try:
    dd = datasets.load_dataset(spec.hub_id, spec.config, **first_kw)
  except Exception as err:  # pylint: disable=broad-except
    if SCRIPT_ERROR in str(err) or "trust_remote_code" in str(err):  # a script not run
      return _script_fallback(key, spec, err, max_bytes, **kw)
    offline = [v for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
               if os.environ.get(v, "").lower() in ("1", "true", "yes", "on")]
    hint = f" ({'/'.join(offline)} set)" if offline else ""
    raise DataError(
        f"cannot load hub dataset {key!r} ({spec.hub_id}"
        f"{', ' + spec.config if spec.config else ''}): {one_line(err)}. No network or "
        f"offline mode{hint}? Use an offline corpus (pydoc, stdlib_src, zen, "
        "synthetic_markov) or local files.") from None
  return _corpus_from_dataset_dict(dd, key, spec, max_bytes)


def build(name: str, opts: dict, hf_cache_dir: str | None = None) -> Corpus:
  """The registry's builder: ``name`` is a key of :data:`HUB_DATASETS` or ``hub/<key>``."""
  key = name[4:] if name.startswith("hub/") else name
  return load_hub(key, hf_cache_dir=hf_cache_dir, **opts)
