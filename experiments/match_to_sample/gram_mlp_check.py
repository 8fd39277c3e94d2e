"""Sanity check of the data (README §3): an MLP on the 36 pairwise cosine similarities of the
nine objects, trained on the fixed n = 5,000 training set of seed 0 and tested on its 5,000
test examples. If it generalises, the labels are determined by the identity patterns and
learnable from n = 5,000 examples; only the transformer recipe can be at fault.

``python experiments/match_to_sample/gram_mlp_check.py`` (about 30 s on 2 loaded cores).
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from attnlab.train.tasks import match_to_sample as mts

UPPER = np.triu_indices(9, 1)


def gram_features(pool, objects):
  """The 36 cosine similarities between the nine objects of each example."""
  x = pool[objects]
  x = x / jnp.linalg.norm(x, axis=-1, keepdims=True)
  return jnp.einsum("bid,bjd->bij", x, x)[:, UPPER[0], UPPER[1]]


def main(seed: int = 0, n: int = 5000, steps: int = 3000):
  t0 = time.time()
  pool = mts.object_pool(seed, 64, 16)
  train = mts.sample_examples(jax.random.fold_in(jax.random.key(seed), 1), n=n, pool_size=64)
  test = mts.sample_examples(jax.random.fold_in(jax.random.key(mts.TEST_SEED), seed), n=5000,
                             pool_size=64)
  x_train, x_test = gram_features(pool, train["objects"]), gram_features(pool, test["objects"])
  k1, k2 = jax.random.split(jax.random.key(1))
  params = {"w1": jax.random.normal(k1, (36, 128)) * 0.2, "b1": jnp.zeros(128),
            "w2": jax.random.normal(k2, (128, 2)) * 0.1, "b2": jnp.zeros(2)}

  def logits(p, x):
    return jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

  opt = optax.adam(3e-3)
  state = opt.init(params)

  @jax.jit
  def step(p, s, x, y):
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(logits(p, x), y).mean()
    updates, s = opt.update(jax.grad(loss)(p), s)
    return optax.apply_updates(p, updates), s

  rng = np.random.default_rng(0)
  for _ in range(steps):
    idx = rng.integers(0, n, 64)
    params, state = step(params, state, x_train[idx], train["label"][idx])
  acc = lambda x, y: float(jnp.mean(jnp.argmax(logits(params, x), -1) == y))
  print(f"gram MLP, n={n}: train accuracy {acc(x_train, train['label']):.3f}, test accuracy "
        f"{acc(x_test, test['label']):.3f} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
  main()
