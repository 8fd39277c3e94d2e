"""Per-layer attention diagnostics (train/diagnostics.py, ``attnlab diagnose``) and their table in
``attnlab report``."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attnlab.models import attention
from attnlab.models.attention import kernels
from attnlab.models.transformer import LanguageModel, TransformerConfig
from attnlab.train import cli, diagnostics, report


def tiny(name="standard", layout="uniform", **options):
  cfg = TransformerConfig(d_model=16, num_layers=2, num_heads=2, d_ff=32, max_len=16,
                          attention=attention.spec(name, layout, **options))
  return LanguageModel(cfg, rngs=nnx.Rngs(0))


def tokens(n=3, length=16):
  return np.asarray(jax.random.randint(jax.random.key(1), (n, length), 0, 256))


@pytest.mark.parametrize("name", ["standard", "taylor_softmax"])
def test_softmax_map_is_the_layers_own(name):
  """The weights reproduce the layer's output: probs @ v through wo equals block.attn(x)
  (``taylor_softmax``: its normalised Taylor weights, not a softmax of the same logits)."""
  model = tiny(name)
  assert diagnostics.not_applicable(model.stack.blocks[1].attn) is None
  rec = diagnostics.attention_inputs(model, jnp.asarray(tokens()))
  layer = model.stack.blocks[1].attn
  _, probs, _ = diagnostics.softmax_map(layer, rec[1]["x"], rec[1]["mask"], rec[1]["positions"])
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
  v = layer.params()["wv"]
  x = rec[1]["x"]
  b, l, _ = x.shape
  vals = (x @ v["kernel"][...] + v.get("bias", 0)).reshape(b, l, 2, 8)
  out = kernels.weighted_values(probs, vals).reshape(b, l, 16)
  wo = layer.params()["wo"]
  y = out @ wo["kernel"][...] + wo.get("bias", 0)
  np.testing.assert_allclose(y, layer(x), atol=1e-5)
  assert isinstance(model.stack.blocks[1].attn, attention.REGISTRY[name])  # restored


@pytest.mark.parametrize("options", [{}, {"efficient": True}])
def test_eit_map_is_the_layers_own(options):
  """EIT's per-head softmax over its ISI/CSI-mixed scores reproduces the layer's output."""
  model = tiny("enhanced_interactive", **options)
  rec = diagnostics.attention_inputs(model, jnp.asarray(tokens()))
  layer = model.stack.blocks[1].attn
  assert diagnostics.not_applicable(layer) is None
  _, probs, _ = diagnostics.softmax_map(layer, rec[1]["x"], rec[1]["mask"], rec[1]["positions"])
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
  x = rec[1]["x"]
  b, l, _ = x.shape
  v, wo = layer.params()["wv"], layer.params()["wo"]
  vals = (x @ v["kernel"][...] + v.get("bias", 0)).reshape(b, l, 2, 8)
  y = kernels.weighted_values(probs, vals).reshape(b, l, 16) @ wo["kernel"][...] + wo.get(
      "bias", 0)
  np.testing.assert_allclose(y, layer(x), atol=1e-5)
  after = tiny("enhanced_interactive", csi_after_softmax=True).stack.blocks[0].attn
  assert "csi_after_softmax" in diagnostics.not_applicable(after)


def test_zero_query_key_weights_give_uniform_attention():
  model = tiny()
  layer = model.stack.blocks[0].attn
  for name in ("wq", "wk"):
    getattr(layer, name).kernel[...] = jnp.zeros_like(getattr(layer, name).kernel[...])
  layers = diagnostics.layer_diagnostics(model, tokens())
  ref = diagnostics.uniform_reference(16)
  t = np.arange(2, 17)
  assert ref["sink"] == pytest.approx(np.mean(1 / t))
  assert ref["local"] == pytest.approx(np.mean(np.minimum(4, t) / t))
  zero = layers[0]
  assert zero["applicable"] and zero["queries"] == 3 * 15
  for metric in ("entropy", "sink", "local"):
    np.testing.assert_allclose(zero["heads"][metric], ref[metric], rtol=1e-5)
    assert zero["std_over_heads"][metric] == pytest.approx(0.0, abs=1e-6)
  assert zero["heads"]["entropy"][0] == pytest.approx(1.0, abs=1e-5)
  assert zero["logits"]["abs_max"] == 0.0 and sum(zero["logits"]["counts"]) == 3 * 2 * 136
  trained = layers[1]  # random init: not exactly uniform
  assert trained["applicable"] and trained["mean"]["entropy"] < 1.0


def test_layers_that_are_not_softmax_are_reported_as_not_applicable():
  model = tiny("adaptive_filter", "hybrid")
  layers = diagnostics.layer_diagnostics(model, tokens(2))
  assert [l["variant"] for l in layers] == ["adaptive_filter", "standard"]
  assert not layers[0]["applicable"] and "not a softmax" in layers[0]["reason"]
  assert layers[1]["applicable"]
  only_uniform = tiny("uniform_broadcast", softmax_heads=False)
  assert "uniform map only" in diagnostics.not_applicable(only_uniform.stack.blocks[0].attn)
  assert diagnostics.not_applicable(tiny("uniform_broadcast").stack.blocks[0].attn) is None
  assert diagnostics.not_applicable(tiny("memory_efficient").stack.blocks[0].attn) is None


@pytest.mark.slow
def test_diagnose_cli_on_a_few_step_run_and_the_report(tmp_path, capsys):
  workdir = tmp_path / "sweep" / "attention=standard,seed=0"
  assert cli.main(["train", "--config", "lm:runlocal", "--config.steps=2",
                   "--config.log_every=1", "--config.eval.windows=4",
                   "--workdir", str(workdir)]) == 0
  capsys.readouterr()
  assert cli.main(["diagnose", str(workdir), "--windows", "3"]) == 0
  out = capsys.readouterr().out
  assert "layer 0 (standard): entropy" in out and "diagnostics.json" in out
  with open(workdir / "diagnostics.json") as f:
    diag = json.load(f)
  assert diag["step"] == 2 and diag["windows"] == 3 and diag["seq_len"] == 64
  assert len(diag["layers"]) == 2 and all(l["applicable"] for l in diag["layers"])
  assert all(0.0 < l["mean"]["entropy"] <= 1.0 + 1e-6 for l in diag["layers"])
  assert os.path.exists(workdir / "diagnostics_heads.png")
  assert os.path.exists(workdir / "diagnostics_logits.png")
  text, plots = report.build_report(str(tmp_path / "sweep"))
  assert "### Attention diagnostics" in text and "lm_attention_diagnostics.png" in plots
  row = [l for l in text.splitlines() if l.startswith("| `standard` | 0 |")]
  assert row and f"{diag['layers'][0]['mean']['entropy']:.3f}" in row[0]
  assert cli.main(["diagnose", str(tmp_path / "nothing")]) == 2


def test_entropy_of_a_known_map():
  """Hand-checked head sums: one query row of t = 2 keys with weights (0.25, 0.75)."""
  probs = np.zeros((1, 1, 2, 2))
  probs[0, 0, 0, 0] = 1.0
  probs[0, 0, 1] = (0.25, 0.75)
  adm = np.tril(np.ones((2, 2), bool))[None, None]
  sums, n = diagnostics.head_sums(probs, adm)
  h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) / math.log(2)
  assert n == 1 and sums["entropy"][0] == pytest.approx(h)
  assert sums["sink"][0] == pytest.approx(0.25) and sums["local"][0] == pytest.approx(1.0)


def test_inputs_are_the_real_inputs_when_a_fixed_stream_runs_through_the_blocks():
  """A Hybrid of `random_seq_qk` runs its fixed sequence ([1, max_len, D]) through every block
  before the input; each block's recorded input is the input's, and both layers' maps are
  computed (the control's from the source the stack passed it)."""
  cfg = TransformerConfig(d_model=32, num_layers=2, num_heads=4, d_ff=64, max_len=16,
                          attention=attention.spec("random_seq_qk", "hybrid"), causal=True)
  model = LanguageModel(cfg, rngs=nnx.Rngs(0))
  tokens = jax.random.randint(jax.random.key(0), (3, 8), 0, 256)
  inputs = diagnostics.attention_inputs(model, tokens)
  assert [tuple(i["x"].shape) for i in inputs] == [(3, 8, 32)] * 2
  layers = diagnostics.layer_diagnostics(model, np.asarray(tokens))
  assert [layer["applicable"] for layer in layers] == [True, True]


def _output_from_map(layer, x, probs):
  """The layer's output rebuilt from attention weights: probs @ (x W_v), then W_o."""
  b, l, d = x.shape
  h = probs.shape[1]
  v, wo = layer.params()["wv"], layer.params()["wo"]
  vals = (x @ v["kernel"][...] + v.get("bias", 0)).reshape(b, l, h, d // h)
  out = kernels.weighted_values(probs, vals).reshape(b, l, d)
  return out @ wo["kernel"][...] + wo.get("bias", 0)


@pytest.mark.parametrize("name", ["random_seq_qk", "fixed_text_qk", "static_embedding_qk"])
def test_qk_control_map_is_the_layers_own(name):
  """A qk-control's map (a softmax over the scores of the source the stack passed it) rebuilds
  the layer's output on that source; the fixed-sequence controls' map is the same for two
  different inputs, `static_embedding_qk`'s is not."""
  model = LanguageModel(TransformerConfig(
      d_model=16, num_layers=2, num_heads=2, d_ff=32, max_len=16, causal=True,
      attention=attention.spec(name, "uniform")), rngs=nnx.Rngs(0))
  layer = model.stack.blocks[1].attn
  assert diagnostics.not_applicable(layer) is None
  maps = []
  for seed in (1, 2):
    toks = jax.random.randint(jax.random.key(seed), (3, 16), 0, 256)
    rec = diagnostics.attention_inputs(model, toks)[1]
    assert rec["symbols"] is not None
    _, probs, _ = diagnostics.softmax_map(layer, rec["x"], rec["mask"], rec["positions"],
                                          rec["symbols"])
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    y = layer(rec["x"], rec["mask"], positions=rec["positions"], symbols=rec["symbols"])
    np.testing.assert_allclose(_output_from_map(layer, rec["x"], probs), y, atol=1e-5)
    maps.append(np.asarray(probs))
  same = np.allclose(maps[0], maps[1], atol=1e-6)
  assert same == (name != "static_embedding_qk")
  layers = diagnostics.layer_diagnostics(model, np.asarray(toks))
  assert all(l["applicable"] for l in layers)
  with pytest.raises(ValueError, match="symbols"):
    diagnostics.softmax_map(layer, rec["x"], rec["mask"], rec["positions"])
