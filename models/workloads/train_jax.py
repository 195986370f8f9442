"""Training in JAX: a small decoder-only transformer (token and position
embeddings, causal multi-head attention, a GELU MLP, tied output) learns the
next token of synthetic sequences drawn from a random Markov chain. One
jit-compiled step takes the loss's gradient with `jax.value_and_grad` and
applies plain SGD to the parameter tree; batches are drawn on the host with
numpy each step, as an input pipeline feeding the device would."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from hosttune.models.workloads import _common


def init_params(jax: Any, key: Any, *, vocab: int, seq: int, dim: int, layers: int) -> Any:
    jnp = jax.numpy
    keys = iter(jax.random.split(key, 2 + 4 * layers))

    def dense(n_in: int, n_out: int) -> Any:
        return jax.random.normal(next(keys), (n_in, n_out)) / np.sqrt(n_in)

    return {
        "tok": jax.random.normal(next(keys), (vocab, dim)) * 0.02,
        "pos": jax.random.normal(next(keys), (seq, dim)) * 0.02,
        "blocks": [{"qkv": dense(dim, 3 * dim), "proj": dense(dim, dim),
                    "up": dense(dim, 4 * dim), "down": dense(4 * dim, dim),
                    "ln1": jnp.ones(dim), "ln2": jnp.ones(dim)} for _ in range(layers)],
    }


def loss_fn(jax: Any, heads: int) -> Any:
    jnp = jax.numpy

    def norm(x: Any, g: Any) -> Any:
        mu = x.mean(-1, keepdims=True)
        return g * (x - mu) / jnp.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5)

    def loss(params: Any, tokens: Any) -> Any:
        x = params["tok"][tokens[:, :-1]] + params["pos"][: tokens.shape[1] - 1]
        b, t, d = x.shape
        mask = jnp.tril(jnp.ones((t, t), bool))
        for blk in params["blocks"]:
            q, k, v = jnp.split(norm(x, blk["ln1"]) @ blk["qkv"], 3, axis=-1)
            q, k, v = (a.reshape(b, t, heads, d // heads) for a in (q, k, v))
            att = jnp.einsum("bthd,bshd->bhts", q, k) / np.sqrt(d // heads)
            att = jax.nn.softmax(jnp.where(mask, att, -1e9), axis=-1)
            x = x + jnp.einsum("bhts,bshd->bthd", att, v).reshape(b, t, d) @ blk["proj"]
            x = x + jax.nn.gelu(norm(x, blk["ln2"]) @ blk["up"]) @ blk["down"]
        logits = x @ params["tok"].T
        logp = jax.nn.log_softmax(logits, axis=-1)
        target = tokens[:, 1:]
        return -jnp.take_along_axis(logp, target[..., None], axis=-1).mean()

    return loss


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__ or "")
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.1)
    args = p.parse_args(argv)
    # the CPU backend only: on a GPU-less host jax would otherwise probe for
    # CUDA/ROCm plugins at start-up and warn
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    jax = _common.require("jax", "jax==0.10.2")
    rng = np.random.default_rng(args.seed)
    # a sparse random Markov chain: each token has 8 likely successors, so
    # the loss has something to fall towards
    succ = rng.integers(0, args.vocab, size=(args.vocab, 8))
    params = init_params(jax, jax.random.PRNGKey(args.seed), vocab=args.vocab, seq=args.seq,
                         dim=args.dim, layers=args.layers)
    grad = jax.value_and_grad(loss_fn(jax, args.heads))

    def sgd_step(params: Any, tokens: Any) -> Any:
        loss, g = grad(params, tokens)
        return jax.tree_util.tree_map(lambda w, dw: w - args.lr * dw, params, g), loss

    step = jax.jit(sgd_step)

    def batch() -> Any:
        toks = np.empty((args.batch, args.seq + 1), np.int32)
        toks[:, 0] = rng.integers(0, args.vocab, args.batch)
        picks = rng.integers(0, 8, size=(args.batch, args.seq))
        for i in range(args.seq):
            toks[:, i + 1] = succ[toks[:, i], picks[:, i]]
        return toks

    clock = _common.Clock(args.seconds)
    steps = 0
    first = last = float("nan")
    for _ in clock.ticks():
        params, loss = step(params, batch())
        steps += 1
        if steps == 1:
            first = float(loss)
    if steps:
        last = float(loss)
    _common.report("train_jax", args.quiet, steps=steps, first_loss=round(first, 3),
                   last_loss=round(last, 3))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
