"""A corpus's byte arrays saved in a work directory (``np.save``) and reused."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import sys
from typing import Any, Callable, Mapping

import numpy as np

from attnlab.train.data_lm.corpus import Corpus
from attnlab.train.data_lm.files import as_list


def _stem(name: str, opts: dict[str, Any], data_files) -> str:
  def describe(f):
    f = os.fspath(f)
    if os.path.isfile(f):
      st = os.stat(f)
      return [os.path.abspath(f), st.st_size, st.st_mtime_ns]
    return f
  files = None
  if data_files is not None:
    if isinstance(data_files, Mapping):
      files = {k: [describe(f) for f in as_list(v)] for k, v in sorted(data_files.items())}
    else:
      files = [describe(f) for f in as_list(data_files)]
  key = {"name": name, "opts": opts, "files": files, "python": sys.version.split()[0]}
  digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
  slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]
  return f"{slug}-{digest}"


def _save_atomic(path: pathlib.Path, arr: np.ndarray):
  tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
  with open(tmp, "wb") as f:
    np.save(f, arr)
  os.replace(tmp, path)


def cached(cache_dir: str | os.PathLike, name: str, opts: dict[str, Any], data_files,
           build: Callable[[], Corpus]) -> Corpus:
  """The corpus saved under ``cache_dir`` for this spec, or ``build()`` saved there; the key
  covers the spec, file sizes/mtimes and the Python version."""
  cache = pathlib.Path(cache_dir)
  stem = _stem(name, opts, data_files)
  meta_path = cache / f"{stem}.json"
  if meta_path.is_file():
    meta = json.loads(meta_path.read_text())
    arrays = {s: np.load(cache / f"{stem}.{s}.npy") for s in meta["splits"]}
    return Corpus(arrays["train"], arrays["val"], name=meta["name"], test=arrays.get("test"),
                  meta=dict(meta["meta"], cached=True))
  corpus = build()
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
