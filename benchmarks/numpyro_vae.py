"""The peer's loop for ``throughput.py``: the same VAE written the NumPyro way (``pip install "pyro-vae[bench]"``).

784-400-20 ReLU MLP encoder (loc and log-scale heads) and decoder (Bernoulli logits), ``numpyro.infer.SVI`` with
``Trace_ELBO`` and Adam, dynamically binarized MNIST held on the device. Two loops, as a NumPyro user writes them:

  numpyro       one ``jax.jit``-ted update per batch (the batch gathered and binarized inside the jitted call);
  numpyro-scan  the whole epoch in one ``jax.lax.scan`` over its batches (whole batches only: the last partial
                batch is left out, and counted out of the images/s).

Only the MLP is written here (``--net conv`` runs without these loops).
"""

from __future__ import annotations

import numpy as np

try:
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as ndist
    from jax.example_libraries import stax
    from numpyro.infer import SVI, Trace_ELBO
except ImportError:  # the bench extra is not installed
    jax = None

NUMPYRO_LOOPS = ("numpyro", "numpyro-scan")


def available() -> bool:
    return jax is not None


def _encoder(hidden: int, z_dim: int):
    return stax.serial(
        stax.Dense(hidden),
        stax.Relu,
        stax.FanOut(2),
        stax.parallel(stax.Dense(z_dim), stax.serial(stax.Dense(z_dim), stax.Exp)),
    )


def _decoder(hidden: int, out_dim: int):
    return stax.serial(stax.Dense(hidden), stax.Relu, stax.Dense(out_dim))


class NumPyroLoops:
    """Both NumPyro loops over the same training images (as float levels in [0, 1], on JAX's default device)."""

    def __init__(self, images: np.ndarray, hidden: int, z_dim: int, batch_size: int, lr: float) -> None:
        self.x = jnp.asarray(images)
        self.batch_size, self.n = batch_size, images.shape[0]
        d = images.shape[1]
        encoder, decoder = _encoder(hidden, z_dim), _decoder(hidden, d)

        def model(batch):
            decode = numpyro.module("decoder", decoder, (batch.shape[0], z_dim))
            with numpyro.plate("data", batch.shape[0]):
                z = numpyro.sample("z", ndist.Normal(0, 1).expand([z_dim]).to_event(1))
                numpyro.sample("x", ndist.Bernoulli(logits=decode(z)).to_event(1), obs=batch)

        def guide(batch):
            encode = numpyro.module("encoder", encoder, (batch.shape[0], d))
            loc, scale = encode(batch)
            with numpyro.plate("data", batch.shape[0]):
                numpyro.sample("z", ndist.Normal(loc, scale).to_event(1))

        self.svi = SVI(model, guide, numpyro.optim.Adam(lr), Trace_ELBO())
        self.state = {name: self.svi.init(jax.random.PRNGKey(0), self.x[:batch_size]) for name in NUMPYRO_LOOPS}

        def step(state, index, key):
            batch = jax.random.bernoulli(key, self.x[index]).astype(jnp.float32)
            return self.svi.update(state, batch)

        self._step = jax.jit(step)

        def epoch(state, batches, keys):
            def body(state, pair):
                state, loss = step(state, *pair)
                return state, loss

            return jax.lax.scan(body, state, (batches, keys))

        self._epoch = jax.jit(epoch)

    def run(self, name: str, seed: int) -> tuple[float, int]:
        """One epoch of loop ``name``; returns the mean loss per image and the images trained on."""
        key = jax.random.PRNGKey(seed)
        order = np.asarray(jax.random.permutation(key, self.n))
        if name == "numpyro":
            total = 0.0
            state = self.state[name]
            for i, start in enumerate(range(0, self.n, self.batch_size)):
                state, loss = self._step(state, order[start : start + self.batch_size], jax.random.fold_in(key, i))
                total += loss  # a device value: no host sync inside the epoch
            self.state[name] = state
            return float(total) / self.n, self.n
        whole = self.n // self.batch_size
        batches = order[: whole * self.batch_size].reshape(whole, self.batch_size)
        keys = jax.random.split(key, whole)
        self.state[name], losses = self._epoch(self.state[name], batches, keys)
        return float(losses.sum()) / (whole * self.batch_size), whole * self.batch_size
