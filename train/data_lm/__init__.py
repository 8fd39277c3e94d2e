"""Byte-level language-modelling data (experiments/lm_ablation/README.md §3.1).

One module per data source, chosen through the registry :data:`SOURCES` (corpus name ->
builder and its allowed options):

* :mod:`.offline`: ``pydoc``, ``stdlib_src`` and ``zen``, built from Python itself;
* :mod:`.markov`: ``synthetic_markov``, a seeded order-k Markov chain whose exact entropy rate
  is the bits-per-byte floor;
* :mod:`.hub`: the Hugging Face hub table (:data:`HUB_DATASETS`) through ``datasets``;
* :mod:`.files`: local files (``files``, or a path), read as raw bytes in any encoding.

A corpus is chosen one way: by name (``data.corpus``), or by local files (``data.data_files``
with ``data.corpus`` empty or ``files``); the empty name with no files is :data:`DEFAULT_CORPUS`.
Both a name and files is an error (:func:`check_settings` reports it, with missing and
too-small files, before a run starts). :func:`load_corpus` returns a :class:`Corpus` of uint8
arrays, optionally cached in a work directory; :mod:`.windows` cuts training and validation
windows. Tokens are bytes (vocabulary 256).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

from attnlab.train.config_loading import parse_pairs
from attnlab.train.data_lm import cache, files, hub, markov, offline
from attnlab.train.data_lm.corpus import (
    TRAIN_FRACTION, Corpus, DataError, min_corpus_bytes, split_bytes)
from attnlab.train.data_lm.files import load_text_files
from attnlab.train.data_lm.hub import (
    HUB_DATASETS, PARQUET_REVISION, SCRIPT_ERROR, HubDataset, load_hub)
from attnlab.train.data_lm.markov import (
    markov_alphabet, markov_bytes, markov_entropy_rate, markov_stationary, markov_transitions)
from attnlab.train.data_lm.offline import pydoc_bytes, stdlib_files, stdlib_src_bytes, zen_bytes
from attnlab.train.data_lm.windows import eval_window_starts, eval_windows, sample_windows

__all__ = [
    "CORPORA", "DEFAULT_CORPUS", "FILE_CORPORA", "HUB_DATASETS", "PARQUET_REVISION",
    "SCRIPT_ERROR", "SOURCES", "TRAIN_FRACTION", "Corpus", "DataError", "HubDataset", "Source",
    "check_settings", "eval_window_starts", "eval_windows", "load_corpus", "load_hub",
    "load_text_files",
    "markov_alphabet", "markov_bytes", "markov_entropy_rate", "markov_stationary",
    "markov_transitions", "min_corpus_bytes", "parse_spec", "pydoc_bytes", "sample_windows",
    "split_bytes", "stdlib_files", "stdlib_src_bytes", "zen_bytes"]

CORPORA = ("pydoc", "stdlib_src", "zen", "synthetic_markov")
"""Offline corpora, built from the running Python installation."""
DEFAULT_CORPUS = "pydoc"
"""The corpus of an empty ``data.corpus`` without ``data.data_files``."""
FILE_CORPORA = ("files", "text")
"""Names that train on ``data_files`` (as does the empty name when files are given)."""


@dataclasses.dataclass(frozen=True)
class Source:
  """A data source: ``build(name, opts, data_files, hf_cache_dir) -> Corpus`` and the options
  its spec accepts (``name:k=v,...``); ``takes_files``: it reads ``data_files``."""

  build: Callable[..., Corpus]
  options: tuple[str, ...] = ()
  takes_files: bool = False


def _no_files(build):
  return lambda name, opts, data_files, hf_cache_dir: build(name, opts)


def _hub(name, opts, data_files, hf_cache_dir):
  return hub.build(name, opts, hf_cache_dir)


SOURCES: dict[str, Source] = {
    "pydoc": Source(_no_files(offline.build_pydoc)),
    "zen": Source(_no_files(offline.build_zen)),
    "stdlib_src": Source(_no_files(offline.build_stdlib_src), ("recursive",)),
    "synthetic_markov": Source(_no_files(markov.build), tuple(markov.DEFAULTS)),
    **{name: Source(files.build, files.OPTIONS, takes_files=True) for name in FILE_CORPORA},
    **{key: Source(_hub, hub.OPTIONS) for key in HUB_DATASETS},
}
"""Corpus name -> :class:`Source` (hub keys also answer to ``hub/<key>``)."""


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
  for key, value in parse_pairs(rest):
    if value is None:
      raise DataError(f"bad corpus option {key!r} in {name_or_spec!r} (expected key=value)")
    opts[key] = _parse_value(value)
  return name.strip(), opts


def _is_path(name: str) -> bool:
  return bool(os.path.splitext(name)[1]) and (os.sep in name or os.path.exists(name))


def resolve(name: str, data_files=None) -> tuple[str, Source, Any]:
  """``(name, source, data_files)`` a corpus name and files stand for (see the module doc).

  Raises:
    DataError: an unknown name, or a corpus name together with ``data_files``.
  """
  if not name:
    name = FILE_CORPORA[0] if data_files else DEFAULT_CORPUS
  key = name[4:] if name.startswith("hub/") and name[4:] in HUB_DATASETS else name
  source = SOURCES.get(key)
  if source is None and _is_path(name):
    if data_files:
      raise DataError(f"corpus {name!r} (a file) and data_files both choose a corpus; give one")
    return name, SOURCES[FILE_CORPORA[0]], [name]
  if source is None:
    raise DataError(f"unknown corpus {name!r}; offline: {', '.join(CORPORA)}; hub: "
                    f"{', '.join(HUB_DATASETS)}; or 'files' with data_files=, or a file path")
  if data_files and not source.takes_files:
    raise DataError(f"corpus {name!r} and data_files both choose a corpus; give one (an empty "
                    "corpus name or 'files' trains on data_files)")
  return name, source, data_files


def _check_opts(name: str, opts: Mapping[str, Any], allowed) -> None:
  bad = sorted(set(opts) - set(allowed))
  if bad:
    raise DataError(f"unknown option(s) {bad} for corpus {name!r}; allowed: {sorted(allowed)}")


def _build(name: str, opts: dict[str, Any], data_files, hf_cache_dir) -> Corpus:
  name, source, data_files = resolve(name, data_files)
  _check_opts(name, opts, source.options)
  return source.build(name, opts, data_files, hf_cache_dir)


def _check_size(corpus: Corpus, seq_len: int, data_files) -> None:
  need = seq_len + 1
  for split in ("train", "val"):
    size = getattr(corpus, split).size
    if size >= need:
      continue
    if corpus.meta.get("source") == "files":
      names = ", ".join(f for fs in corpus.meta["files"].values() for f in fs)
      raise DataError(f"data file {names} is too small for seq_len={seq_len}: its {split} "
                      f"split has {size} bytes, at least {need} needed (a single file: "
                      f"{min_corpus_bytes(seq_len)} bytes, split 90/10)")
    raise DataError(f"corpus {corpus.name!r} is too small for seq_len={seq_len}: its {split} "
                    f"split has {size} bytes, at least {need} needed")


def load_corpus(name_or_spec: str, *, cache_dir: str | os.PathLike | None = None,
                data_files=None, hf_cache_dir: str | None = None,
                seq_len: int | None = None) -> Corpus:
  """Resolve a corpus name or spec to a :class:`Corpus`.

  Accepted forms: an offline corpus of :data:`CORPORA` (``"pydoc"``, ``"zen"``,
  ``"stdlib_src:recursive=true"``, ``"synthetic_markov:order=3,vocab=8,seed=1"``); a key of
  :data:`HUB_DATASETS` (optionally ``"wikitext2:max_bytes=1000000"``; a script-based one runs
  its hub code only with ``trust_remote_code=true``); ``""`` or ``"files"`` with ``data_files``
  (a path, a list, or a mapping with ``train`` / ``validation`` / ``test``); ``""`` alone
  (:data:`DEFAULT_CORPUS`); or a path to one local file.

  Args:
    name_or_spec: see above.
    cache_dir: if given, the byte arrays are saved there (``np.save``) and reused; the cache
      key covers the spec, file sizes/mtimes and the Python version.
    data_files: local files, with an empty name or ``"files"`` only.
    hf_cache_dir: cache directory for ``datasets`` (local tabular files: a temporary one).
    seq_len: if given, both splits must hold one window (``seq_len + 1`` bytes).

  Raises:
    DataError: one line naming the corpus or file.
  """
  name, opts = parse_spec(name_or_spec)
  name = resolve(name, data_files)[0]
  if cache_dir is None:
    corpus = _build(name, opts, data_files, hf_cache_dir)
  else:
    corpus = cache.cached(cache_dir, name, opts, data_files,
                          lambda: _build(name, opts, data_files, hf_cache_dir))
  if seq_len is not None:
    _check_size(corpus, seq_len, data_files)
  return corpus


def check_settings(corpus: str, data_files=(), val_files=(), seq_len: int = 1) -> None:
  """Config-time check of an LM run's data section, before anything is built or compiled.

  Raises:
    DataError: one line naming the ``config.data`` fields at fault: a corpus name together
      with ``data_files``, ``val_files`` without ``data_files``, an unknown corpus or option, a
      missing file, or local plain files too small for ``seq_len``.
  """
  name, opts = parse_spec(corpus)
  train, val = files.as_list(data_files), files.as_list(val_files)
  if val and not train:
    raise DataError("config.data.val_files needs config.data.data_files (the training files)")
  if train and name not in ("",) + FILE_CORPORA:
    raise DataError(f"config.data.corpus={corpus!r} and config.data.data_files="
                    f"{tuple(train)} both choose a corpus; set one (config.data.corpus='' "
                    "trains on data_files)")
  if name in FILE_CORPORA and not train:
    raise DataError(f"config.data.corpus={corpus!r} needs config.data.data_files")
  name, source, _ = resolve(name, train)
  _check_opts(name, opts, source.options)
  for field, paths in (("data_files", train), ("val_files", val)):
    for f in paths:
      if not files.is_remote(f) and not os.path.isfile(f):
        raise DataError(f"config.data.{field}: file not found: {f}")
  plain = [f for f in train + val
           if not files.is_remote(f) and os.path.splitext(f)[1].lower() not in files.TABULAR]
  if not train or len(plain) != len(train) + len(val):
    return
  joiner = len(str(opts.get("joiner", "\n\n")).encode("utf-8"))
  for field, paths in (("data_files", train), ("val_files", val)):
    if not paths:
      continue
    need = seq_len + 1 if val else min_corpus_bytes(seq_len)
    size = sum(os.path.getsize(f) for f in paths) + joiner * (len(paths) - 1)
    if size < need:
      raise DataError(f"config.data.{field}: {', '.join(paths)} has {size} bytes; "
                      f"config.data.seq_len={seq_len} needs at least {need} bytes"
                      + ("" if val else " (split 90/10 into training and validation)"))
