"""Byte-level LM data: offline corpora, local files (bytes; tabular via `datasets`), hub
fallback chain, windows.

No network: every test runs with HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set, and the hub calls
are mocked.
"""

import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from attnlab.train import data_lm


@pytest.fixture(autouse=True)
def offline(monkeypatch):
  """Offline mode for `datasets` and the hub client (env and the already-read constants)."""
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
  import datasets
  import huggingface_hub.constants as hub_constants
  for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
    if hasattr(datasets.config, name):
      monkeypatch.setattr(datasets.config, name, True)
  monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)


# ---------------------------------------------------------------------------------------------
# Offline corpora.


def test_pydoc_corpus_split_and_sanity():
  corpus = data_lm.load_corpus("pydoc")
  whole = data_lm.pydoc_bytes()
  n = len(whole)
  assert corpus.train.dtype == np.uint8 and corpus.val.dtype == np.uint8
  assert corpus.num_bytes == n == corpus.train.size + corpus.val.size
  assert corpus.train.size == int(0.9 * n)  # contiguous 90 / 10 split
  assert bytes(corpus.train) + bytes(corpus.val) == whole
  assert n > 100_000  # ~466k bytes on 3.11; exact size differs across Python versions
  distinct = np.unique(np.concatenate([corpus.train, corpus.val])).size
  assert 60 < distinct < 256
  # Sorted-key order, UTF-8, joined with a blank line.
  from pydoc_data import topics
  first = sorted(topics.topics)[0]
  assert whole.startswith(topics.topics[first].encode("utf-8") + b"\n\n")


def test_zen_is_quiet_and_decoded(monkeypatch, capsys):
  monkeypatch.delitem(sys.modules, "this", raising=False)
  text = data_lm.zen_bytes()
  assert capsys.readouterr().out == ""
  assert text.startswith(b"The Zen of Python, by Tim Peters")
  assert b"Beautiful is better than ugly." in text
  corpus = data_lm.load_corpus("zen")
  assert corpus.num_bytes == len(text) and corpus.train.size == int(0.9 * len(text))


def test_stdlib_src_corpus():
  files = data_lm.stdlib_files()
  assert len(files) > 50 and [f.name for f in files] == sorted(f.name for f in files)
  corpus = data_lm.load_corpus("stdlib_src")
  assert corpus.meta["num_files"] == len(files)
  assert corpus.train.size == int(0.9 * corpus.num_bytes)
  assert bytes(corpus.train[:len(files[0].read_bytes())]) == files[0].read_bytes()


def test_markov_entropy_rate_is_the_empirical_floor():
  opts = dict(order=2, vocab=8, seed=3, concentration=0.3)
  rate = data_lm.markov_entropy_rate(**opts)
  assert 0.5 < rate < math.log2(8)
  data = np.frombuffer(data_lm.markov_bytes(200_000, **opts), np.uint8)
  assert set(np.unique(data)) <= set(data_lm.markov_alphabet(8))
  # Cross-entropy of the sample under the true chain converges to the entropy rate.
  p = data_lm.markov_transitions(opts["order"], 8, opts["seed"], opts["concentration"])
  sym = data - ord("a")
  ctx = sym[:-2] * 8 + sym[1:-1]
  nll_bits = -np.mean(np.log2(p[ctx, sym[2:]]))
  assert abs(nll_bits - rate) < 0.03
  # Seeded: same seed, same bytes; another seed, other bytes.
  assert data_lm.markov_bytes(1000, **opts) == data_lm.markov_bytes(1000, **opts)
  assert data_lm.markov_bytes(1000, **{**opts, "seed": 4}) != data_lm.markov_bytes(1000, **opts)


def test_markov_spec_and_unknown_option():
  corpus = data_lm.load_corpus("synthetic_markov:num_bytes=5000,order=1,vocab=4,seed=1")
  assert corpus.num_bytes == 5000
  assert corpus.meta["entropy_rate_bits"] == pytest.approx(
      data_lm.markov_entropy_rate(order=1, vocab=4, seed=1))
  with pytest.raises(data_lm.DataError, match="unknown option"):
    data_lm.load_corpus("synthetic_markov:bogus=1")
  with pytest.raises(data_lm.DataError, match="unknown corpus"):
    data_lm.load_corpus("no_such_corpus")


def test_cache_is_written_and_reused(tmp_path, monkeypatch):
  first = data_lm.load_corpus("zen", cache_dir=tmp_path)
  assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".npy", ".npy"]

  def fail(*args, **kwargs):
    raise AssertionError("cache miss: the corpus was rebuilt")
  monkeypatch.setattr(data_lm, "_build", fail)
  again = data_lm.load_corpus("zen", cache_dir=tmp_path)
  assert again.meta["cached"] and again.name == "zen"
  np.testing.assert_array_equal(again.train, first.train)
  np.testing.assert_array_equal(again.val, first.val)
  assert again.num_bytes == first.num_bytes
  with pytest.raises(AssertionError, match="cache miss"):  # another spec, another entry
    data_lm.load_corpus("synthetic_markov:num_bytes=100", cache_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# Local files through `datasets`.


def test_local_text_files_are_read_as_bytes(tmp_path):
  train_text = "première ligne\n\nsecond line\n" * 50
  val_text = "validation ✓\nend"
  (tmp_path / "train.txt").write_text(train_text, encoding="utf-8")
  (tmp_path / "val.txt").write_text(val_text, encoding="utf-8")
  corpus = data_lm.load_corpus(
      "files", data_files={"train": str(tmp_path / "train.txt"),
                           "validation": str(tmp_path / "val.txt")},
      hf_cache_dir=str(tmp_path / "hf"))
  assert bytes(corpus.train) == train_text.encode("utf-8")  # bytes survive exactly
  assert bytes(corpus.val) == val_text.encode("utf-8")
  # One file only: split 90 / 10.
  single = data_lm.load_text_files(tmp_path / "train.txt", hf_cache_dir=str(tmp_path / "hf"))
  n = len(train_text.encode("utf-8"))
  assert single.train.size == int(0.9 * n) and single.num_bytes == n


def test_local_parquet_file(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq
  pq.write_table(pa.table({"text": ["alpha", "beta", "gamma"], "n": [1, 2, 3]}),
                 tmp_path / "train.parquet")
  pq.write_table(pa.table({"text": ["delta"], "n": [4]}), tmp_path / "val.parquet")
  corpus = data_lm.load_text_files(tmp_path / "train.parquet", tmp_path / "val.parquet",
                                   hf_cache_dir=str(tmp_path / "hf"))
  assert bytes(corpus.train) == b"alpha\n\nbeta\n\ngamma"
  assert bytes(corpus.val) == b"delta"


def test_missing_file_names_the_path(tmp_path):
  missing = tmp_path / "nope.txt"
  with pytest.raises(data_lm.DataError, match="nope.txt"):
    data_lm.load_corpus("files", data_files=[str(missing)])
  with pytest.raises(ValueError, match="data file not found"):
    data_lm.load_text_files([str(missing)])


# ---------------------------------------------------------------------------------------------
# Hub table and fallback chain (network mocked).


def test_hub_table():
  table = data_lm.HUB_DATASETS
  assert (table["wikitext2"].hub_id, table["wikitext2"].config) == (
      "Salesforce/wikitext", "wikitext-2-raw-v1")
  assert table["wikitext103"].config == "wikitext-103-raw-v1"
  assert table["wikitext2_doc"].hub_id == "EleutherAI/wikitext_document_level"
  assert table["tinystories"].hub_id == "roneneldan/TinyStories"
  assert table["text8"].hub_id == "afmck/text8"
  assert (table["fineweb_edu"].hub_id, table["fineweb_edu"].config) == (
      "HuggingFaceFW/fineweb-edu", "sample-10BT") and table["fineweb_edu"].streaming
  assert table["tiny_shakespeare"].script_based and table["enwik8"].script_based
  assert table["tiny_shakespeare"].raw_url.endswith("data/tinyshakespeare/input.txt")
  assert table["enwik8"].raw_url.endswith("enwik8.zip")


class FakeHub:
  """Stands in for `datasets.load_dataset`; records the calls."""

  def __init__(self, parquet=None):
    self.calls = []
    self.parquet = parquet

  def __call__(self, path, name=None, **kwargs):
    self.calls.append((path, name, kwargs.get("revision")))
    if kwargs.get("revision") == data_lm.PARQUET_REVISION:
      if self.parquet is None:
        raise FileNotFoundError(f"no parquet conversion for {path}")
      return self.parquet
    raise RuntimeError(f"Dataset scripts are no longer supported, but found {path}.py")


def test_script_fallback_to_parquet_revision(monkeypatch):
  import datasets
  dd = datasets.DatasetDict({
      "train": datasets.Dataset.from_dict({"text": ["To be, or not to be"]}),
      "validation": datasets.Dataset.from_dict({"text": ["that is the question"]}),
      "test": datasets.Dataset.from_dict({"text": ["Whether 'tis nobler"]})})
  hub = FakeHub(parquet=dd)
  monkeypatch.setattr(datasets, "load_dataset", hub)
  corpus = data_lm.load_hub("tiny_shakespeare")
  assert [c[2] for c in hub.calls] == [None, data_lm.PARQUET_REVISION]
  assert hub.calls[0][0] == "karpathy/tiny_shakespeare"
  assert bytes(corpus.train) == b"To be, or not to be"
  assert bytes(corpus.val) == b"that is the question"
  assert bytes(corpus.test) == b"Whether 'tis nobler"


def test_script_fallback_exhausted_says_what_to_do(monkeypatch):
  import datasets
  monkeypatch.setattr(datasets, "load_dataset", FakeHub())
  with pytest.raises(data_lm.DataError) as info:
    data_lm.load_hub("enwik8")
  msg = str(info.value)
  assert "'enwik8'" in msg and "\n" not in msg
  assert data_lm.PARQUET_REVISION in msg and "enwik8.zip" in msg and "data_files" in msg
  assert "datasets<4" not in msg  # no advice to downgrade


def test_hub_without_network_fails_in_one_line():
  with pytest.raises(data_lm.DataError) as info:  # the real loader, offline
    data_lm.load_hub("wikitext2")
  msg = str(info.value)
  assert "'wikitext2'" in msg and "Salesforce/wikitext" in msg and "\n" not in msg
  assert info.value.__cause__ is None and info.value.__suppress_context__
  with pytest.raises(data_lm.DataError, match="unknown hub dataset"):
    data_lm.load_hub("nonexistent")


def test_hub_dataset_without_validation_split_is_split(monkeypatch):
  import datasets
  rows = ["word " * 40 for _ in range(10)]
  dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": rows})})
  monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: dd)
  corpus = data_lm.load_corpus("tinystories:max_bytes=1000")
  assert corpus.num_bytes == 1000 and corpus.train.size == 900


# ---------------------------------------------------------------------------------------------
# Windows.


@pytest.fixture(scope="module")
def tokens():
  return jnp.asarray(np.arange(1000) % 251, jnp.uint8)


def test_sample_windows_pure_in_seed_and_step(tokens):
  a = data_lm.sample_windows(tokens, 0, 5, 8, 16)
  b = data_lm.sample_windows(tokens, 0, 5, 8, 16)
  c = data_lm.sample_windows(tokens, 0, 6, 8, 16)
  d = data_lm.sample_windows(tokens, 1, 5, 8, 16)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], d[0])
  inputs, targets = a
  assert inputs.shape == targets.shape == (8, 16) and inputs.dtype == jnp.int32
  np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
  tok = np.asarray(tokens)
  for row_in, row_t in zip(np.asarray(inputs), np.asarray(targets)):
    start = int(np.flatnonzero(tok == row_in[0])[0])  # values are unique within 251
    np.testing.assert_array_equal(row_in, tok[start:start + 16])
    np.testing.assert_array_equal(row_t, tok[start + 1:start + 17])
  # Traced step inside another jit gives the same batch.
  traced = jax.jit(lambda s: data_lm.sample_windows(tokens, 0, s, 8, 16))(jnp.int32(5))
  np.testing.assert_array_equal(traced[0], inputs)


def test_process_slices_concatenate_to_global_batch(tokens):
  inputs, targets = data_lm.sample_windows(tokens, 3, 11, 8, 32)
  for count in (1, 2, 4):
    parts = [data_lm.sample_windows(tokens, 3, 11, 8, 32, process_slice=(i, count))
             for i in range(count)]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), inputs)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), targets)
  # The same under jit with static batch_size / seq_len / process_slice (as the LM task does).
  jitted = jax.jit(data_lm.sample_windows,
                   static_argnames=("batch_size", "seq_len", "process_slice"))
  half = jitted(tokens, 3, 11, 8, 32, process_slice=(1, 2))
  np.testing.assert_array_equal(half[0], inputs[4:])
  with pytest.raises(ValueError):
    data_lm.sample_windows(tokens, 3, 11, 8, 32, process_slice=(0, 3))


def test_eval_windows_are_disjoint_and_deterministic():
  tok = np.arange(105, dtype=np.uint8)
  inputs, targets = data_lm.eval_windows(tok, 10)
  assert inputs.shape == (10, 10) and inputs.dtype == np.int32
  np.testing.assert_array_equal(inputs.ravel(), np.arange(100))
  np.testing.assert_array_equal(targets.ravel(), np.arange(1, 101))
  few, _ = data_lm.eval_windows(tok, 10, max_windows=3)
  np.testing.assert_array_equal(few[:, 0], [0, 40, 90])
  np.testing.assert_array_equal(data_lm.eval_window_starts(105, 10, 3), [0, 40, 90])
  np.testing.assert_array_equal(data_lm.eval_windows(tok, 10, max_windows=3)[0], few)
