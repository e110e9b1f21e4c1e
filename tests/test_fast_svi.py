"""FastSVI makes the update stock ``SVI`` + ``pyro.optim.Adam`` makes: same losses, same weights."""

from __future__ import annotations

import copy
import math

import pyro
import pyro.distributions as dist
import pyro.optim
import pytest
import torch
from pyro.infer import SVI

from pyro_vae import (
    VAE,
    Bernoulli,
    FlowPrior,
    MixtureOfGaussians,
    NetConfig,
    ObjectiveConfig,
    ScheduleConfig,
    StandardNormal,
    VampPrior,
)
from pyro_vae.errors import ConfigError
from pyro_vae.inference.fast_svi import FastSVI, make_adam
from pyro_vae.model.guides import FullCovGaussianGuide, IAFGuide
from pyro_vae.training.checkpoint import adam_state_from_pyro

NET = NetConfig(hidden=(32,))


def batches(n: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.bernoulli(torch.rand(16, 784, generator=gen), generator=gen) for _ in range(n)]


def assert_same_weights(a: VAE, b: VAE) -> None:
    """Equal up to float32 rounding (fused Adam and traced graphs order their arithmetic differently); the
    steps themselves are 1e-2 (Adam at lr 1e-2), so this is far tighter than one step."""
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=1e-4, rtol=1e-3, msg=lambda m, name=name: f"{name}: {m}")


def make_vae(prior=None, guide=None) -> VAE:
    pyro.set_rng_seed(0)
    return VAE(NET, prior or StandardNormal(4), Bernoulli(), guide, image_shape=(1, 28, 28))


def run_stock(vae: VAE, objective, xs, betas=None, state=None):
    betas = betas or [1.0] * len(xs)
    with pyro.get_param_store().scope():
        optim = pyro.optim.Adam({"lr": 1e-2})
        if state is not None:
            optim.set_state(state)
        svi = SVI(vae.model, vae.guide, optim, objective)
        losses = []
        for i, (x, beta) in enumerate(zip(xs, betas)):
            pyro.set_rng_seed(100 + i)
            losses.append(svi.step(x, beta))
        return losses, optim.get_state()


def run_fast(vae: VAE, objective, xs, betas=None, optimizer=None, svi=None):
    betas = betas or [1.0] * len(xs)
    with pyro.get_param_store().scope():
        svi = svi or FastSVI(vae.model, vae.guide, optimizer or make_adam(vae.parameters(), 1e-2), objective)
        losses = []
        for i, (x, beta) in enumerate(zip(xs, betas)):
            pyro.set_rng_seed(100 + i)
            losses.append(svi.step(x, beta))
        return losses


@pytest.mark.parametrize(
    "objective, particles, prior, guide, jit",
    [
        ("trace", 1, None, None, False),
        ("trace", 1, None, None, True),
        ("meanfield", 1, None, None, False),
        ("iwae", 3, None, None, False),
        ("trace", 2, lambda: MixtureOfGaussians(4, num_components=3), lambda: FullCovGaussianGuide(4), True),
        ("trace", 1, lambda: FlowPrior(4), lambda: IAFGuide(4), True),
        ("trace", 1, lambda: VampPrior(4, num_components=5, data_dim=784), None, True),
    ],
)
def test_fast_svi_takes_the_same_steps_as_stock_svi(objective, particles, prior, guide, jit):
    """Five steps from the same weights and seeds (the last batch smaller, the KL weight changing):
    equal losses and (float32-)equal weights, also when the step is traced.

    The components are built here, after seeding, so their random initial values (flows, mixture
    means, pseudo-inputs) do not depend on which tests ran or were collected before. Losses agree to
    a relative 1e-4: after the first step the two runs' weights differ by float32 rounding (fused Adam
    and traced graphs order their arithmetic differently), which moves a loss of ~9,000 nats by up to
    ~2e-5 of itself through the flows; one Adam step moves it by ~3%.
    """
    config = ObjectiveConfig(kind=objective, particles=particles, jit=jit)
    torch.manual_seed(0)
    prior, guide = prior and prior(), guide and guide()
    stock, fast = make_vae(copy.deepcopy(prior), copy.deepcopy(guide)), make_vae(prior, guide)
    fast.load_state_dict(stock.state_dict())
    xs = batches(4) + [batches(1, seed=1)[0][:7]]
    betas = [1.0] * 5 if objective == "iwae" else [0.2, 0.4, 0.6, 0.8, 1.0]
    stock_losses, _ = run_stock(
        stock, ObjectiveConfig(kind=objective, particles=particles, jit=False).make(), xs, betas
    )
    svi = FastSVI(fast.model, fast.guide, make_adam(fast.parameters(), 1e-2), config.make())
    fast_losses = run_fast(fast, None, xs, betas, svi=svi)
    assert svi.jit == jit and svi.jit_disabled_reason is None
    assert fast_losses[0] == pytest.approx(stock_losses[0], rel=1e-6)  # the same weights: only rounding
    assert fast_losses == pytest.approx(stock_losses, rel=1e-4)
    assert_same_weights(stock, fast)


def test_validation_runs_on_the_first_step_only():
    """The first step is validated as configured (on in tests); later steps skip the checks."""
    seen = []
    vae = make_vae()

    def model(x, beta):
        seen.append(pyro.infer.util.is_validation_enabled())
        vae.model(x, beta)

    svi = FastSVI(model, vae.guide, make_adam(vae.parameters(), 1e-3), ObjectiveConfig(jit=False).make())
    with pyro.get_param_store().scope():
        for x in batches(3):
            svi.step(x, 1.0)
    assert seen == [True, False, False, False]  # step 1 runs the model twice: the validated check, then the step
    assert pyro.infer.util.is_validation_enabled()  # restored after each step
    # ... and the first step's checks are real: grey-level pixels under a Bernoulli fail them.
    svi = FastSVI(vae.model, vae.guide, make_adam(vae.parameters(), 1e-3), ObjectiveConfig().make())
    with pyro.get_param_store().scope(), pytest.raises(ValueError, match="support"):
        svi.step(torch.rand(4, 784), 1.0)


def test_a_parameter_outside_the_optimizer_is_refused():
    vae = make_vae()

    def guide(x, beta):
        pyro.param("stray", torch.zeros(2))
        vae.guide(x, beta)

    svi = FastSVI(vae.model, guide, make_adam(vae.parameters(), 1e-3), ObjectiveConfig().make())
    with pyro.get_param_store().scope(), pytest.raises(ConfigError, match="stray"):
        svi.step(batches(1)[0], 1.0)


def test_pyro_optimizer_state_carries_over():
    """A version-0.1 checkpoint's pyro.optim.Adam state continues exactly as stock SVI would."""
    stock, fast = make_vae(), make_vae()
    xs = batches(6)
    _, state = run_stock(stock, ObjectiveConfig(jit=False).make(), xs[:3])
    fast.load_state_dict(stock.state_dict())
    run_stock(stock, ObjectiveConfig(jit=False).make(), xs[3:], state=copy.deepcopy(state))  # steps in place
    optimizer = make_adam(fast.parameters(), 1e-2)
    optimizer.load_state_dict(adam_state_from_pyro(state, fast, optimizer))
    assert all(s["step"].item() == 3 for s in optimizer.state.values())
    run_fast(fast, ObjectiveConfig().make(), xs[3:], optimizer=optimizer)
    assert_same_weights(stock, fast)


def test_iwae_lr_schedule():
    """Burda et al. 2016: stage i lasts 3**i epochs at lr * 10**(-i/7); 3280 epochs in all."""
    schedule = ScheduleConfig(lr_schedule="iwae")
    stage_of = {1: 0, 2: 1, 4: 1, 5: 2, 13: 2, 14: 3, 40: 3, 41: 4, 121: 4, 122: 5, 1093: 6, 1094: 7, 3280: 7, 4000: 7}
    for epoch, stage in stage_of.items():
        assert schedule.lr_at(epoch, 1e-3) == pytest.approx(1e-3 * 10 ** (-stage / 7)), epoch
    assert ScheduleConfig().lr_at(500, 2e-3) == 2e-3


def test_fast_svi_works_with_a_pyro_distribution_site():
    """A plain Pyro model (not a VAE) trains too: FastSVI is generic over model/guide pairs."""
    loc = torch.nn.Parameter(torch.zeros(()))

    def model(x):
        pyro.module("m", torch.nn.ParameterList([loc]))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    svi = FastSVI(model, lambda x: None, make_adam([loc], 0.1), ObjectiveConfig().make())
    with pyro.get_param_store().scope():
        for _ in range(200):
            svi.step(torch.full((10,), 3.0))
    assert loc.item() == pytest.approx(3.0, abs=0.05)


def test_a_model_that_cannot_be_traced_trains_eagerly_and_says_why():
    """A model that reads Python state outside its arguments (here a call counter) breaks Pyro's rule for
    jit: the trace bakes one value in. FastSVI notices on the first batch, since the traced loss differs
    from the eager one on the same draws, says so, and trains with the eager Trace_ELBO."""
    traced_vae = make_vae()
    calls = []

    def model(x, beta):
        calls.append(1)
        traced_vae.model(x, beta * len(calls))

    svi = FastSVI(model, traced_vae.guide, make_adam(traced_vae.parameters(), 1e-2), ObjectiveConfig(jit=True).make())
    losses = run_fast(traced_vae, None, batches(3), svi=svi)
    assert not svi.jit and "differs from the eager" in svi.jit_disabled_reason
    assert all(math.isfinite(loss) for loss in losses)


def test_the_direct_fused_adam_step_is_optimizer_step_bit_for_bit():
    """FastSVI's shortcut around torch.optim's bookkeeping: the same weights and state, to the last bit, over a
    learning-rate change; it stands aside for other settings, hooks and the first (state-making) step."""
    from pyro_vae.inference.fast_svi import fused_adam_step

    a, b = make_vae(), make_vae()
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = make_adam(a.parameters(), 1e-2), make_adam(b.parameters(), 1e-2)
    assert not fused_adam_step(opt_b)  # no gradients, no state yet
    for step in range(4):
        for p, q in zip(a.parameters(), b.parameters()):
            p.grad = q.grad = torch.randn_like(p)
        if step == 2:
            for opt in (opt_a, opt_b):
                opt.param_groups[0]["lr"] = 3e-3
        opt_a.step()
        if step == 0:  # the first step makes the state
            assert not fused_adam_step(opt_b)
            opt_b.step()
        else:
            assert fused_adam_step(opt_b)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    for p, q in zip(a.parameters(), b.parameters()):
        assert all(torch.equal(opt_a.state[p][k], opt_b.state[q][k]) for k in ("step", "exp_avg", "exp_avg_sq"))
    assert not fused_adam_step(torch.optim.Adam(a.parameters(), lr=1e-2, fused=True, amsgrad=True))
    handle = opt_b.register_step_post_hook(lambda *args: None)
    assert not fused_adam_step(opt_b)
    handle.remove()
    assert fused_adam_step(opt_b)
