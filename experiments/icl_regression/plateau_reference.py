"""Independent plain-JAX check of the H = 2 plateau (no attnlab code).

He et al.'s model written out from experiments/icl_regression/README.md §1.2 (one softmax
attention layer, H heads of width D = d + 1, no MLP/norm/residual/bias, init
U(+-1/sqrt(fan_in)), query attends to the context only) and trained as §1.3 (Adam 1e-3, batch
256 fresh prompts, d = 5, L = 40, beta ~ N(0, I/d), noise 0.1), for several seeds at once
(``jax.vmap`` over seeds).

Prints, per seed, the mean training MSE over the 200 steps before each checkpoint step (fresh
prompts, so an unbiased estimate of the test MSE at L = 40 with 51,200 prompts: standard error
about 0.002) and the number of seeds below 0.30 at each checkpoint.

    python experiments/icl_regression/plateau_reference.py --heads 2 --steps 10000 --seeds 8
"""

import argparse
import json

import jax
import jax.numpy as jnp
import optax

D_X, L_CTX, BATCH, NOISE = 5, 40, 256, 0.1
D = D_X + 1
WINDOW = 200


def init(key, heads):
  k = jax.random.split(key, 4)
  u = lambda key, shape, fan: jax.random.uniform(key, shape, minval=-fan ** -0.5,
                                                 maxval=fan ** -0.5)
  return dict(q=u(k[0], (heads, D, D), D), k=u(k[1], (heads, D, D), D),
              v=u(k[2], (heads, D, D), D), o=u(k[3], (heads * D,), heads * D))


def prompts(key):
  kx, kb, kn = jax.random.split(key, 3)
  x_BxLxd = jax.random.normal(kx, (BATCH, L_CTX + 1, D_X))
  beta_Bxd = jax.random.normal(kb, (BATCH, D_X)) / D_X ** 0.5
  y_BxL = (jnp.einsum("bld,bd->bl", x_BxLxd, beta_Bxd)
           + NOISE ** 0.5 * jax.random.normal(kn, (BATCH, L_CTX + 1)))
  return x_BxLxd, y_BxL


def predict(p, x_BxLxd, y_BxL):
  z_BxLxD = jnp.concatenate([x_BxLxd[:, :L_CTX], y_BxL[:, :L_CTX, None]], -1)
  zq_BxD = jnp.concatenate([x_BxLxd[:, L_CTX], jnp.zeros((BATCH, 1))], -1)
  q_BxHxD = jnp.einsum("hij,bj->bhi", p["q"], zq_BxD)
  k_BxHxLxD = jnp.einsum("hij,blj->bhli", p["k"], z_BxLxD)
  v_BxHxLxD = jnp.einsum("hij,blj->bhli", p["v"], z_BxLxD)
  a_BxHxL = jax.nn.softmax(jnp.einsum("bhi,bhli->bhl", q_BxHxD, k_BxHxLxD) / D ** 0.5, -1)
  out_BxHxD = jnp.einsum("bhl,bhli->bhi", a_BxHxL, v_BxHxLxD)
  return out_BxHxD.reshape(BATCH, -1) @ p["o"]


def loss(p, key):
  x, y = prompts(key)
  return jnp.mean((predict(p, x, y) - y[:, L_CTX]) ** 2)


def train(seed, heads, steps):
  opt = optax.adam(1e-3)
  p = init(jax.random.PRNGKey(seed), heads)

  def step(carry, i):
    p, s = carry
    l, g = jax.value_and_grad(loss)(p, jax.random.fold_in(jax.random.PRNGKey(10_000 + seed), i))
    u, s = opt.update(g, s, p)
    return (optax.apply_updates(p, u), s), l

  _, losses = jax.lax.scan(step, (p, opt.init(p)), jnp.arange(steps))
  return losses.reshape(-1, WINDOW).mean(axis=1)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--heads", type=int, default=2)
  ap.add_argument("--steps", type=int, default=10000)
  ap.add_argument("--seeds", type=int, default=8)
  ap.add_argument("--out", default=None, help="optional JSON file for the results")
  args = ap.parse_args()
  if args.steps % WINDOW:
    raise SystemExit(f"--steps must be a multiple of {WINDOW}")
  run = jax.jit(jax.vmap(lambda s: train(s, args.heads, args.steps)))
  windows = run(jnp.arange(args.seeds))
  marks = [m for m in (2000, 5000, 10000, 20000, args.steps) if m <= args.steps]
  marks = sorted(set(marks))
  table = {m: [round(float(w[m // WINDOW - 1]), 3) for w in windows] for m in marks}
  for m in marks:
    below = sum(v < 0.30 for v in table[m])
    print(f"H={args.heads} step {m:>6}: MSE@40 per seed {table[m]}  ({below}/{args.seeds} < 0.30)")
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"heads": args.heads, "steps": args.steps, "seeds": args.seeds,
                 "mse_at_40_by_step": table}, f, indent=1)


if __name__ == "__main__":
  main()
