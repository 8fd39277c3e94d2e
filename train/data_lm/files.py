"""Local files as a corpus (``data.data_files``, optionally ``data.val_files``).

Plain files (any extension but the tabular ones) are read as raw bytes, whatever their encoding:
the model is byte-level, so Latin-1, UTF-16 or binary files train as they are. Tabular files
(``.parquet``, ``.json``, ``.jsonl``, ``.csv``) go through ``datasets.load_dataset`` and the same
text extraction as hub datasets; its cache is the given ``hf_cache_dir`` or a temporary
directory removed afterwards, never the user's global ``datasets`` cache.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from typing import Any, Mapping

from attnlab.train.data_lm.corpus import Corpus, DataError, one_line, split_bytes
from attnlab.train.data_lm.hub import _VAL_NAMES, HubDataset, _corpus_from_dataset_dict

TABULAR = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}
OPTIONS = ("text_column", "joiner")
"""The options of a ``files:k=v`` spec."""


def as_list(files) -> list[str]:
  if files is None:
    return []
  if isinstance(files, (str, os.PathLike)):
    return [os.fspath(files)]
  return [os.fspath(f) for f in files]


def is_remote(path: str) -> bool:
  """URLs and glob patterns are left to ``datasets`` (tabular files only)."""
  return "://" in path or any(c in path for c in "*?[")


def check_exists(path: str) -> None:
  if not is_remote(path) and not os.path.isfile(path):
    raise DataError(f"data file not found: {path}")


def _read_bytes(files: list[str], joiner: bytes, split: str) -> bytes:
  for f in files:
    if is_remote(f):
      raise DataError(f"{f}: URLs and patterns work for tabular files only "
                      f"({', '.join(TABULAR)}); pass a local path")
  data = joiner.join(pathlib.Path(f).read_bytes() for f in files)
  if not data:
    raise DataError(f"data file {', '.join(files)} is empty ({split} split)")
  return data


def load_text_files(train_files, val_files=None, *, test_files=None,
                    text_column: str = "text", joiner: str = "\n\n",
                    hf_cache_dir: str | None = None, name: str | None = None) -> Corpus:
  """Load local files as bytes (plain files) or through ``datasets`` (tabular files).

  Files of a split are joined with ``joiner`` (tabular rows too). Without ``val_files`` the
  training bytes are split 90/10.

  Raises:
    DataError: a missing or empty file (named), mixed file types, or no text column.
  """
  splits = {"train": as_list(train_files), "validation": as_list(val_files),
            "test": as_list(test_files)}
  splits = {k: v for k, v in splits.items() if v}
  if "train" not in splits:
    raise DataError("load_text_files needs at least one training file")
  for files in splits.values():
    for f in files:
      check_exists(f)
  exts = {os.path.splitext(f)[1].lower() for files in splits.values() for f in files}
  builders = {TABULAR.get(e, "bytes") for e in exts}
  if len(builders) != 1:
    raise DataError(f"mixed file types {sorted(exts)}; use one format per corpus")
  builder = builders.pop()
  if builder == "bytes":
    sep = joiner.encode("utf-8")
    data = {k: _read_bytes(v, sep, k) for k, v in splits.items()}
    if "validation" in data:
      train, val = data["train"], data["validation"]
    else:
      train, val = split_bytes(data["train"])
    corpus = Corpus(train, val, name=name or "files", test=data.get("test"))
  else:
    corpus = _load_tabular(builder, splits, text_column, joiner, hf_cache_dir, name)
  corpus.meta = {"source": "files", "builder": builder,
                 "files": {k: [os.path.abspath(f) if not is_remote(f) else f for f in v]
                           for k, v in splits.items()}}
  return corpus


def _load_tabular(builder, splits, text_column, joiner, hf_cache_dir, name) -> Corpus:
  import datasets  # pylint: disable=import-outside-toplevel
  with contextlib.ExitStack() as stack:
    if hf_cache_dir is None:  # not the user's global cache: a directory removed afterwards
      hf_cache_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="attnlab_hf_"))
    try:
      dd = datasets.load_dataset(builder, data_files=splits, cache_dir=str(hf_cache_dir))
    except FileNotFoundError as err:
      raise DataError(f"data file not found: {one_line(err)}") from None
    spec = HubDataset(hub_id=builder, text_column=text_column, joiner=joiner)
    return _corpus_from_dataset_dict(dd, name or "files", spec, None)


def build(name: str, opts: dict, data_files, hf_cache_dir: str | None = None) -> Corpus:
  """The registry's builder: ``data_files`` is a path, a list, or a mapping with ``train`` /
  ``validation`` / ``test``."""
  if not data_files:
    raise DataError(f"corpus {name!r} needs data_files=")
  if isinstance(data_files, Mapping):
    train = data_files.get("train")
    val = next((data_files[k] for k in _VAL_NAMES if k in data_files), None)
    test = data_files.get("test")
  else:
    train, val, test = data_files, None, None
  kw: dict[str, Any] = dict(opts)
  return load_text_files(train, val, test_files=test, hf_cache_dir=hf_cache_dir, name=name, **kw)
