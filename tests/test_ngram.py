"""Byte-level n-gram baselines (train/ngram.py): normalisation, hand computations, held-out k."""

import inspect

import numpy as np
import pytest

from attnlab.train import data_lm, ngram

TINY = np.frombuffer(b"the cat sat on the mat; the bat ate the hat.", np.uint8)


def _all_next(context: bytes):
  """grams [256, n] for ``context`` followed by every byte, and their history lengths."""
  n = len(context) + 1
  grams = np.zeros((ngram.V, n), np.int64)
  grams[:, :-1] = np.frombuffer(context, np.uint8)
  grams[:, -1] = np.arange(ngram.V)
  return grams, np.full(ngram.V, n - 1)


@pytest.mark.parametrize("context", [b"", b"t", b"z", b"th", b"at", b"qq", b"the", b"he ",
                                     b"xyz", b" th", b"e.", b"."])
def test_each_context_sums_to_one(context):
  counts = ngram.Counts(TINY, 4)
  grams, avail = _all_next(context)
  for k in ngram.ADDK_CANDIDATES:
    np.testing.assert_allclose(ngram.addk_prob(counts, grams, avail, k).sum(), 1.0, rtol=1e-12)
  p = ngram.kn_prob(counts, grams, avail)
  assert np.all(p > 0)
  np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-12)


def test_short_history_sums_to_one():
  """A position with fewer history bytes than the order is scored at the order it can fill."""
  counts = ngram.Counts(TINY, 4)
  grams, _ = _all_next(b"the")
  for avail in (0, 1, 2):
    a = np.full(ngram.V, avail)
    np.testing.assert_allclose(ngram.kn_prob(counts, grams, a).sum(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(ngram.addk_prob(counts, grams, a, 0.1).sum(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(  # the same as the lower-order model on the usable bytes
        ngram.kn_prob(counts, grams, a), ngram.kn_prob(counts, grams[:, 3 - avail:], a))


def test_addk_unigram_by_hand():
  train = np.frombuffer(b"aab", np.uint8)  # c(a) = 2, c(b) = 1, N = 3
  counts = ngram.Counts(train, 1)
  grams = np.array([[ord("a")], [ord("b")], [ord("c")]])
  p = ngram.addk_prob(counts, grams, np.zeros(3, int), 0.5)
  np.testing.assert_allclose(p, [2.5 / 131, 1.5 / 131, 0.5 / 131])
  val = np.frombuffer(b"abc", np.uint8)
  k = ngram.select_addk(np.frombuffer(b"aab" * 30 + b"ab", np.uint8), (1,))[1]["k"]
  got = ngram.ngram_bpb(np.frombuffer(b"aab" * 30 + b"ab", np.uint8), val, (1,))
  assert got["addk_k"][1] == k
  c = {ord("a"): 61, ord("b"): 31}  # counts in the 92 training bytes
  want = -np.mean([np.log2((c.get(b, 0) + k) / (92 + 256 * k)) for b in b"abc"])
  np.testing.assert_allclose(got["addk"][1], want)


def test_kneser_ney_by_hand():
  """Train "aabab": bigrams aa, ab, ba, ab; continuation counts N1+(. a) = 2, N1+(. b) = 1."""
  counts = ngram.Counts(np.frombuffer(b"aabab", np.uint8), 2)
  d2 = 2 / (2 + 2 * 1)  # raw bigram counts {aa: 1, ab: 2, ba: 1}: n1 = 2, n2 = 1
  d1 = 1 / (1 + 2 * 1)  # continuation counts {a: 2, b: 1}: n1 = 1, n2 = 1
  assert counts.raw[2].discount == d2 and counts.cont[1].discount == d1
  back1 = d1 * 2 / 3 / 256  # D_1 T() / A() * 1/256, with A() = 3, T() = 2
  p1 = {"a": (2 - d1) / 3 + back1, "b": (1 - d1) / 3 + back1, "c": back1}
  want = {"ab": (2 - d2) / 3 + d2 * 2 / 3 * p1["b"],  # c(a.) = 3, T(a) = 2
          "aa": (1 - d2) / 3 + d2 * 2 / 3 * p1["a"],
          "ac": d2 * 2 / 3 * p1["c"],
          "ba": (1 - d2) / 1 + d2 * 1 / 1 * p1["a"],  # c(b.) = 1, T(b) = 1
          "bb": d2 * p1["b"],
          "ca": p1["a"], "cc": p1["c"]}  # history "c" unseen: the unigram level
  grams = np.array([[ord(x), ord(y)] for x, y in want])
  got = ngram.kn_prob(counts, grams, np.ones(len(want), int))
  np.testing.assert_allclose(got, list(want.values()), rtol=1e-12)
  np.testing.assert_allclose(sum(p1.values()) + 253 * back1, 1.0)


def _repetitive(seed, n):
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 4, 300).astype(np.uint8) + ord("a")  # 4 symbols: long contexts pay
  data = np.tile(base, n // base.size + 1)[:n].copy()
  noise = rng.random(n) < 0.02
  data[noise] = rng.integers(0, 256, noise.sum())
  return data


def test_bpb_decreases_with_order():
  """An order-4 Markov chain: every order up to 5 helps, and order 5 reaches its entropy rate."""
  data = np.frombuffer(data_lm.markov_bytes(24000, order=4, vocab=4, seed=0), np.uint8)
  got = ngram.ngram_bpb(data[:20000], data[20000:])
  for kind in ("addk", "kn"):
    values = [got[kind][n] for n in ngram.ORDERS]
    assert all(a > b for a, b in zip(values, values[1:])), (kind, values)
  rate = data_lm.markov_entropy_rate(order=4, vocab=4, seed=0)
  assert got["kn"][5] < got["addk"][5]
  assert abs(got["kn"][5] - rate) < 0.05 and abs(got["addk"][5] - rate) < 0.05  # 4000 bytes


def test_k_chosen_on_heldout_training_bytes_only():
  assert "val" not in inspect.signature(ngram.select_addk).parameters
  train = _repetitive(1, 10000)  # held-out train bytes favour a small k ...
  # ... random val a big one
  noisy = np.random.default_rng(2).integers(0, 256, 3000).astype(np.uint8)
  got = ngram.ngram_bpb(train, noisy, (2, 3))
  same = ngram.ngram_bpb(train, train[:500], (2, 3))
  assert got["addk_k"] == same["addk_k"] == {n: ngram.select_addk(train, (2, 3))[n]["k"]
                                             for n in (2, 3)}
  counts = ngram.Counts(train, 3)
  grams, avail = ngram.contexts(noisy, np.arange(noisy.size), 3)
  on_val = {k: ngram.bits(ngram.addk_prob(counts, grams, avail, k))
            for k in ngram.ADDK_CANDIDATES}
  assert min(on_val, key=on_val.get) != got["addk_k"][3]  # validation would have chosen another


def test_window_starts_cut_the_history():
  train, val = _repetitive(3, 5000), _repetitive(3, 6000)[5000:]
  pos = np.arange(1, val.size)
  alone = ngram.ngram_bpb(train, val, (1, 3), positions=pos, starts=pos)  # no history at all
  assert alone["kn"][3] == alone["kn"][1]
  counts, none = ngram.Counts(train, 1), np.zeros(pos.size, int)
  assert alone["addk"][3] == pytest.approx(ngram.bits(ngram.addk_prob(  # order 1, order 3's k
      counts, val[pos, None].astype(int), none, alone["addk_k"][3])))
  full = ngram.ngram_bpb(train, val, (3,), positions=pos)
  assert full["kn"][3] < alone["kn"][3]


def test_cache_and_metrics(tmp_path):
  train, val = _repetitive(4, 3000), _repetitive(4, 3500)[3000:]
  first = ngram.cached_ngram_bpb(train, val, tmp_path, (1, 2))
  files = list(tmp_path.glob("ngram-*.json"))
  assert len(files) == 1
  again = ngram.cached_ngram_bpb(train, val, tmp_path, (1, 2))
  assert again == first and list(tmp_path.glob("ngram-*.json")) == files
  m = ngram.metrics(again)
  assert set(m) == {f"ngram_{s}@n={n}" for s in ("addk_bpb", "kn_bpb", "addk_k") for n in (1, 2)}
  assert m == ngram.metrics(ngram.ngram_bpb(train, val, (1, 2)))
  assert "| interpolated Kneser-Ney |" in ngram.table(first)


def test_lm_task_reference_metrics_score_the_evaluated_bytes(tmp_path):
  """The LM task's final-row baselines: the targets of its evaluation windows, each with history
  only inside its window, cached in the workdir's data/."""
  from attnlab.train import config_loading, settings, tasks
  cd = config_loading.get_config("lm:runlocal", {
      "data.corpus": "synthetic_markov:num_bytes=20000,order=2,vocab=4", "eval.windows": "3"})
  task = tasks.get("lm").Task(settings.from_config(cd), str(tmp_path))
  got = task.reference_metrics()
  assert len(list((tmp_path / "data").glob("ngram-*.json"))) == 1
  assert set(got) == {f"ngram_{s}@n={n}" for s in ("addk_bpb", "kn_bpb", "addk_k")
                      for n in ngram.ORDERS}
  assert got == task.reference_metrics()  # from the cache
  seq = task.s.seq_len
  starts = data_lm.eval_window_starts(task.corpus.val.size, seq, 3)
  assert starts.size == 3 and task.val_targets.size == 3 * seq
  by_window = []  # each window scored on its own bytes: the same numbers
  for s in starts:
    window = task.corpus.val[s:s + seq + 1]
    r = ngram.ngram_bpb(task.corpus.train, window, positions=np.arange(1, seq + 1))
    by_window.append((r["addk"][4], r["kn"][4]))
  np.testing.assert_allclose([got["ngram_addk_bpb@n=4"], got["ngram_kn_bpb@n=4"]],
                             np.mean(by_window, axis=0))


def test_cli_prints_the_table(tmp_path, capsys):
  from attnlab.train import cli
  spec = "--config.data.corpus=synthetic_markov:num_bytes=20000,order=2,vocab=4"
  assert cli.main(["ngram", "--config", "lm:runlocal", spec, "--workdir", str(tmp_path)]) == 0
  out = capsys.readouterr().out
  assert "| add-k (k chosen on held-out train) |" in out and "| interpolated Kneser-Ney |" in out
  assert "evaluation windows" in out and len(list((tmp_path / "data").glob("ngram-*.json"))) == 1
  assert cli.main(["ngram", "--config", "lm:runlocal", spec, "--whole-val"]) == 0
  assert "every validation byte" in capsys.readouterr().out
  assert cli.main(["ngram", "--config", "icl_regression:runlocal"]) == 2
  assert "needs an LM config" in capsys.readouterr().err
