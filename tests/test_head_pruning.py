"""Head pruning (attnlab.train.head_pruning): zeroing a head's rows of ``wo`` removes exactly
that head's output, the curve starts at the model's own bpb, and the model is left unchanged."""

import jax
import numpy as np
import pytest
from flax import nnx

from attnlab.models import attention
from attnlab.models.transformer import LanguageModel, TransformerConfig
from attnlab.train import head_pruning


def tiny_model(name):
  cfg = TransformerConfig(d_model=32, num_layers=2, num_heads=4, d_ff=64, max_len=16,
                          attention=attention.spec(name), causal=True)
  return LanguageModel(cfg, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("name", ["standard", "enhanced_interactive"])
def test_zeroing_wo_rows_equals_zeroing_that_heads_values(name):
  """Head m's output is softmax(...) V_m: zeroing its value projection (columns of wv) gives
  the same logits as zeroing its rows of wo; heads and row blocks line up."""
  tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 256)
  for m in (0, 3):  # the first and the last row block
    by_rows, by_values = tiny_model(name), tiny_model(name)
    head_pruning.zero_heads(by_rows, [[m], [m]])
    for attn in head_pruning.prunable_layers(by_values):
      kernel = np.array(attn.wv.kernel[...])
      width = kernel.shape[1] // attn.num_heads
      kernel[:, m * width:(m + 1) * width] = 0.0
      attn.wv.kernel[...] = kernel
    np.testing.assert_allclose(by_rows(tokens), by_values(tokens), atol=1e-5)
    assert not np.allclose(by_rows(tokens), tiny_model(name)(tokens), atol=1e-4)


def test_curve_starts_at_the_models_bpb_and_leaves_the_model_unchanged():
  model = tiny_model("standard")
  tokens = jax.random.randint(jax.random.key(2), (4, 16), 0, 256)
  before = np.asarray(model(tokens))
  evaluate = lambda m: float(np.asarray(m(tokens)).std())  # any function of the logits
  result = head_pruning.pruning_curve(model, evaluate, orders=3, seed=0)
  assert result["k"] == [0, 1, 2, 3]
  assert result["bpb"][0] == [evaluate(model)] * 3
  assert len(result["bpb"]) == 4 and all(len(row) == 3 for row in result["bpb"])
  assert result["bpb"][3] != result["bpb"][0]
  np.testing.assert_array_equal(np.asarray(model(tokens)), before)
  for perm in result["orders"]:
    assert [sorted(p) for p in perm] == [[0, 1, 2, 3]] * 2


def test_layers_without_an_output_projection_over_heads_are_refused():
  from attnlab.train.config_loading import ConfigError
  with pytest.raises(ConfigError, match="output projection"):
    head_pruning.prunable_layers(tiny_model("uniform_broadcast"))


def test_script_pools_curves_in_its_folder_and_pairs_seeds(tmp_path):
  """experiments/head_pruning/prune_heads.py with no run: the table and plot from the curves
  already in --out, Δbpb averaged over orders per seed, paired to `standard` by seed."""
  import json
  import os

  from attnlab.train import config_loading
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  script = config_loading.load_module(os.path.join(root, "experiments", "head_pruning",
                                                   "prune_heads.py"))
  def write(name, seed, base, bpb):  # bpb [k, orders]
    with open(tmp_path / f"{name},seed={seed}.json", "w") as f:
      json.dump({"attention": name, "seed": seed, "base_bpb": base, "bpb": bpb,
                 "num_heads": 2}, f)
  write("standard", 0, 2.0, [[2.0, 2.0], [2.4, 2.6]])  # Δ at k=1: mean 0.5
  write("standard", 1, 2.1, [[2.1, 2.1], [2.7, 2.7]])  # 0.6
  write("enhanced_interactive", 0, 2.0, [[2.0, 2.0], [3.0, 3.0]])  # 1.0
  write("enhanced_interactive", 1, 2.0, [[2.0, 2.0], [3.0, 3.2]])  # 1.1
  assert script.main(["--out", str(tmp_path)]) == 0
  table = (tmp_path / "table.md").read_text()
  paired_row = [l for l in table.splitlines() if l.startswith("| `enhanced_interactive` −")][0]
  assert "| 0,1 | +0.000 [+0.000, +0.000] | +0.500 [+0.500, +0.500] |" in paired_row
  std_row = [l for l in table.splitlines() if l.startswith("| `standard` | 0,1 |")][0]
  assert "+0.550 [" in std_row
  assert os.path.exists(tmp_path / "head_pruning.png")
