"""`relational` inside the shared transformer: one symbol retriever for all relational layers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from attnlab.models import attention
from attnlab.models.transformer import LanguageModel, TransformerConfig
from test_relational import B, D, H, HIGHEST, build, inputs


@pytest.mark.parametrize("symbol_type", ["symbolic", "positional"])
def test_language_model_shares_one_retriever(symbol_type):
  cfg = TransformerConfig(
      vocab_size=31, d_model=D, num_layers=2, num_heads=H, d_ff=64, max_len=16,
      positions="rope",
      attention=attention.spec("relational", n_relations=2, rel_proj_dim=8,
                               symbol_type=symbol_type, n_symbols=8))
  make = lambda: LanguageModel(cfg, rngs=nnx.Rngs(0))  # noqa: E731
  model = make() if symbol_type == "positional" else nnx.eval_shape(make)
  paths = ["/".join(map(str, path)) for path, _ in nnx.to_flat_state(nnx.state(model))]
  table = "template_features" if symbol_type == "symbolic" else "symbol_library"
  assert sum(p.endswith(table) for p in paths) == 1
  assert sum(p.endswith("wr") for p in paths) == 2
  assert all(not p.startswith("stack/blocks") or "retriever" not in p for p in paths)
  assert model.stack.retriever.symbol_library.shape[0] == (8 if symbol_type == "symbolic"
                                                           else 16)
  if symbol_type != "positional":
    return

  tokens = jax.random.randint(jax.random.key(0), (B, 9), 0, cfg.vocab_size)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss(params):
    logits = nnx.merge(graphdef, params, rest)(tokens)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits[:, :-1]), tokens[:, 1:, None], -1)
    return jnp.mean(nll), logits

  step = nnx.jit(lambda m, t, c: m(t, cache=c))
  with jax.default_matmul_precision(HIGHEST):
    (value, full), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    # Token-by-token decoding (the shared positional retriever at offset positions).
    cache = model.init_cache(B, 16)
    steps = []
    for t in range(tokens.shape[1]):
      y, cache = step(model, tokens[:, t:t + 1], cache)
      steps.append(y)
  assert np.isfinite(float(value))
  flat = nnx.to_flat_state(grads)
  assert all(bool(jnp.all(jnp.isfinite(v[...]))) for _, v in flat)
  retriever_grads = [v[...] for p, v in flat if "retriever" in map(str, p)]
  assert retriever_grads and any(float(jnp.abs(g).max()) > 0 for g in retriever_grads)
  np.testing.assert_allclose(np.asarray(jnp.concatenate(steps, 1)), np.asarray(full),
                             rtol=1e-4, atol=1e-4)


def test_detached_layer_needs_symbols():
  layer = build(True)
  layer.detach_retriever()
  x, _ = inputs()
  with pytest.raises(ValueError, match="symbols"):
    layer(x)
