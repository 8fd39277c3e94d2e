"""Offline corpora built from the running Python installation: ``pydoc`` (the
``pydoc_data.topics`` help texts), ``zen`` (the Zen of Python) and ``stdlib_src`` (the standard
library's ``*.py`` files). Their bytes depend on the Python version only."""

from __future__ import annotations

import codecs
import contextlib
import io
import pathlib
import sys
import sysconfig

from attnlab.train.data_lm.corpus import Corpus, split_bytes


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



def _python() -> str:
  return sys.version.split()[0]


def build_pydoc(name: str, opts: dict) -> Corpus:
  train, val = split_bytes(pydoc_bytes())
  return Corpus(train, val, name=name, meta={"source": "pydoc_data.topics", "python": _python()})


def build_zen(name: str, opts: dict) -> Corpus:
  train, val = split_bytes(zen_bytes())
  return Corpus(train, val, name=name, meta={"source": "this.s", "python": _python()})


def build_stdlib_src(name: str, opts: dict) -> Corpus:
  recursive = bool(opts.get("recursive", False))
  train, val = split_bytes(stdlib_src_bytes(recursive))
  return Corpus(train, val, name=name, meta={"source": "stdlib", "python": _python(),
                                             "recursive": recursive,
                                             "num_files": len(stdlib_files(recursive))})
