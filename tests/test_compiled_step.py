"""The compiled step: Trace_ELBO's loss and gradients as one torch.compile'd graph, and what it falls back to.

The suite runs with TORCH_COMPILE_DISABLE=1 (conftest); the tests that compile ask for the ``compiling`` fixture.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from test_cli import TINY, run_cli
from test_fast_svi import assert_same_weights, batches, make_vae, run_fast

from pyro_vae import ObjectiveConfig, RunConfig
from pyro_vae.errors import TrainingError
from pyro_vae.inference import fast_svi
from pyro_vae.inference.compiled_elbo import CompiledELBO
from pyro_vae.inference.fast_svi import FastSVI, make_adam
from pyro_vae.model.guides import FullCovGaussianGuide


def test_the_compiled_loss_and_gradients_are_trace_elbo_s(compiling):
    """On the same draws, with a KL weight, a full-covariance guide and three vectorised particles: Trace_ELBO's
    loss and every gradient, to float32 rounding. (One case: a first compile takes 20-30 s on a 2-core CPU.)"""
    particles = 3
    torch.manual_seed(0)
    vae = make_vae(guide=FullCovGaussianGuide(4))
    params = list(vae.parameters())
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=particles > 1, max_plate_nesting=1)
    x, beta = batches(1)[0], torch.tensor(0.5)
    with pyro.get_param_store().scope():
        compiled = CompiledELBO(vae.model, vae.guide, params, elbo, (x, beta))
        for seed in (1, 2):
            pyro.set_rng_seed(seed)
            loss, finite, grads = compiled(x, beta)
            assert finite
            pyro.set_rng_seed(seed)
            with pyro.validation_enabled(False):
                eager = elbo.loss_and_grads(vae.model, vae.guide, x, beta)
            assert loss == pytest.approx(eager, rel=1e-5)
            for p, g in zip(params, grads):
                torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-4 * float(p.grad.abs().max()))
                p.grad = None


def test_a_compiled_fast_svi_takes_the_steps_of_the_uncompiled_one(compiling):
    """Five steps (the KL weight changing, the last batch smaller and so traced, not compiled): the losses and
    weights of the uncompiled step, to float32 rounding; the first step's draws are the same."""
    xs = batches(4) + [batches(1, seed=1)[0][:7]]
    betas = [0.2, 0.4, 0.6, 0.8, 1.0]
    runs = {}
    for compile in (False, True):
        vae = make_vae()
        svi = FastSVI(
            vae.model, vae.guide, make_adam(vae.parameters(), 1e-2), ObjectiveConfig().make(), compile=compile
        )
        runs[compile] = vae, run_fast(vae, None, xs, betas, svi=svi), svi
    (plain, plain_losses, _), (compiled, compiled_losses, svi) = runs[False], runs[True]
    assert svi.compiled is not None and svi.compile_disabled_reason is None
    assert svi.compiled.shapes == ((16, 784), ())
    assert compiled_losses[0] == pytest.approx(plain_losses[0], rel=1e-6)
    assert compiled_losses == pytest.approx(plain_losses, rel=1e-4)
    assert_same_weights(plain, compiled)


def test_a_non_finite_compiled_step_stops_before_the_update(compiling):
    """The graph says whether its loss or any gradient is NaN or infinite; such a step raises, unapplied."""
    vae = make_vae()
    svi = FastSVI(vae.model, vae.guide, make_adam(vae.parameters(), 1e-2), ObjectiveConfig().make(), compile=True)
    xs = batches(2)
    with pyro.get_param_store().scope():
        svi.step(xs[0], 1.0)
        assert svi.compiled is not None
        before = [p.detach().clone() for p in vae.parameters()]
        xs[1][0, 0] = float("nan")
        with pytest.raises(TrainingError, match="the loss became nan"):
            svi.step(xs[1], 1.0)
    assert all(torch.equal(p, q) for p, q in zip(vae.parameters(), before))


def test_without_compiling_the_step_is_the_uncompiled_one_bit_for_bit():
    """TORCH_COMPILE_DISABLE=1 (as in this suite) gives the uncompiled step exactly, and says why."""
    xs = batches(3)
    vaes, losses = [], []
    for compile in (False, True):
        vae = make_vae()
        svi = FastSVI(
            vae.model, vae.guide, make_adam(vae.parameters(), 1e-2), ObjectiveConfig().make(), compile=compile
        )
        losses.append(run_fast(vae, None, xs, svi=svi))
        vaes.append(vae)
    assert svi.compiled is None and svi.compile_disabled_reason == "TORCH_COMPILE_DISABLE=1 is set"
    assert losses[0] == losses[1]
    assert all(torch.equal(p, q) for p, q in zip(vaes[0].parameters(), vaes[1].parameters()))


def test_a_guide_without_reparameterisation_is_not_compiled(compiling):
    """Its score-function term is not in the compiled loss: FastSVI says so and trains as without compiling."""
    logit = torch.nn.Parameter(torch.zeros(3))
    loc = torch.nn.Parameter(torch.zeros(3))

    def model(x):
        pyro.module("m", torch.nn.ParameterList([loc]))
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(0.5 * torch.ones(3)).to_event(1))
            pyro.sample("x", dist.Normal(loc + c, 1.0).to_event(1), obs=x)

    def guide(x):
        pyro.module("g", torch.nn.ParameterList([logit]))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Bernoulli(logits=logit).to_event(1))

    svi = FastSVI(model, guide, make_adam([logit, loc], 0.1), ObjectiveConfig(jit=False).make(), compile=True)
    with pyro.get_param_store().scope():
        losses = [svi.step(torch.randn(8, 3)) for _ in range(3)]
    assert svi.compiled is None and "site c is not reparameterised" in svi.compile_disabled_reason
    assert all(math.isfinite(loss) for loss in losses) and logit.grad is None


def test_a_compiled_graph_that_disagrees_with_trace_elbo_is_dropped(compiling, monkeypatch):
    """The check on the first batch: a graph whose loss is off is never used (inductor is replaced here by the
    uncompiled graph plus one nat); the run is the uncompiled one."""

    def off_by_one(graph, example_inputs):
        def run(*args):
            checks, grads = graph(*args)
            return checks + 1.0, grads

        return run

    monkeypatch.setattr("torch._inductor.compile_fx.compile_fx", off_by_one)
    xs = batches(3)
    vae, plain = make_vae(), make_vae()
    svi = FastSVI(vae.model, vae.guide, make_adam(vae.parameters(), 1e-2), ObjectiveConfig().make(), compile=True)
    losses = run_fast(vae, None, xs, svi=svi)
    assert svi.compiled is None and "disagrees with the eager Trace_ELBO: loss" in svi.compile_disabled_reason
    plain_svi = FastSVI(plain.model, plain.guide, make_adam(plain.parameters(), 1e-2), ObjectiveConfig().make())
    assert losses == run_fast(plain, None, xs, svi=plain_svi)
    assert all(torch.equal(p, q) for p, q in zip(vae.parameters(), plain.parameters()))


def test_a_job_s_graph_is_for_its_rows(compiling):
    """In a job the graph is compiled for this process's rows of the full batch, and used only for them: the
    last batch's rows (another slice of another total, even with as many rows) take the uncompiled step."""
    group = fast_svi.Group(rank=1, world=2, local_rank=1)
    vae = make_vae()
    svi = FastSVI(
        vae.model, vae.guide, make_adam(vae.parameters(), 1e-2), ObjectiveConfig().make(), group=group, compile=True
    )
    x, beta = batches(1)[0], torch.tensor(1.0)
    with pyro.get_param_store().scope(), pyro.validation_enabled(False):
        svi._loss_and_grads((x[8:16], beta), {}, (slice(8, 16), 16))
        assert svi.compiled is not None and svi._compiled_for == (((8, 784), ()), (8, 16, 16))
        calls = []
        compiled, svi.compiled = svi.compiled, lambda *args: calls.append(args) or compiled(*args)
        svi._loss_and_grads((x[8:16], beta), {}, (slice(8, 16), 16))
        svi._loss_and_grads((x[7:15], beta), {}, (slice(7, 15), 15))  # 8 rows, but of a batch of 15
    assert len(calls) == 1


def test_train_compiles_by_default_and_says_so(compiling, tmp_path, data_dir, capsys):
    """(Batches of 16 images, as in the FastSVI tests above: the same graph, which inductor has cached.)"""
    tiny = [*TINY, "--batch-size", "16"]
    code, _, err = run_cli(["train", "--data-dir", data_dir, "--epochs", "1", "--out", tmp_path / "run", *tiny], capsys)
    assert code == 0, err
    assert "compiled the training step in" in err
    code, _, err = run_cli(
        ["train", "--data-dir", data_dir, "--epochs", "1", "--out", tmp_path / "plain", "--no-compile", *tiny], capsys
    )
    assert code == 0 and "compiled" not in err
    compiled, plain = (torch.load(tmp_path / name / "ckpt.pt", weights_only=True) for name in ("run", "plain"))
    assert RunConfig.from_checkpoint(compiled).objective.compile
    assert not RunConfig.from_checkpoint(plain).objective.compile
    for name, value in plain["model_state"].items():
        torch.testing.assert_close(compiled["model_state"][name], value, atol=1e-4, rtol=1e-3)


def test_a_checkpoint_from_before_the_compiled_step_resumes_without_it():
    table = RunConfig().to_dict()
    del table["objective"]["compile"]
    assert not RunConfig.from_checkpoint({"format_version": 2, "config": table}).objective.compile
    assert RunConfig.from_checkpoint({"format_version": 2, "config": RunConfig().to_dict()}).objective.compile


def test_each_process_s_graph_gives_its_share_of_the_whole_batch(compiling):
    """A job compiles one graph per process, for its rows of the batch with the whole batch's noise
    (GlobalBatchNoise active while the graph is recorded): the shares' losses and gradients add up to the whole
    batch's eager Trace_ELBO. Negative control: shares that draw only their own rows' noise do not add up."""
    from pyro_vae.inference.global_noise import GlobalBatchNoise

    torch.manual_seed(0)
    vae = make_vae()
    params = list(vae.parameters())
    elbo = Trace_ELBO(max_plate_nesting=1)
    x, beta, shares = batches(1)[0], torch.tensor(0.5), (slice(0, 6), slice(6, 16))
    with pyro.get_param_store().scope(), pyro.validation_enabled(False):
        pyro.set_rng_seed(4)
        whole = elbo.loss_and_grads(vae.model, vae.guide, x, beta)
        whole_grads = [p.grad for p in params]
        vae.zero_grad(set_to_none=True)
        loss, grads, own_rows = 0.0, [torch.zeros_like(p) for p in params], 0.0
        for rows in shares:
            with GlobalBatchNoise(rows, 16):
                compiled = CompiledELBO(vae.model, vae.guide, params, elbo, (x[rows], beta))
            pyro.set_rng_seed(4)
            part, finite, part_grads = compiled(x[rows], beta)
            assert finite
            loss += part
            grads = [g + h for g, h in zip(grads, part_grads)]
            pyro.set_rng_seed(4)
            own_rows += elbo.loss(vae.model, vae.guide, x[rows], beta)
    assert loss == pytest.approx(whole, rel=1e-5)
    for g, w in zip(grads, whole_grads):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4 * float(w.abs().max()))
    assert own_rows != pytest.approx(whole, rel=1e-3)


def test_a_job_checks_the_summed_gradients_for_nan(compiling):
    """In a job the graph's own finiteness check covers this process's share only: another process's NaN arrives
    in the all-reduce, and the step must stop there, before Adam (here the other process is a stub that adds NaN
    to the sum)."""
    group = fast_svi.Group(rank=0, world=2, local_rank=0)
    vae = make_vae()
    svi = FastSVI(
        vae.model, vae.guide, make_adam(vae.parameters(), 1e-2), ObjectiveConfig().make(), group=group, compile=True
    )
    poison = {"on": False}

    def other_process(tensor):
        if poison["on"]:
            tensor[0] = float("nan")  # the first gradient entry
        return tensor

    object.__setattr__(group, "sum", other_process)  # (Group is a frozen dataclass)
    x = batches(1)[0]
    with pyro.get_param_store().scope():
        svi.step(x[:8], 1.0, shard=(slice(0, 8), 16))
        assert svi.compiled is not None and svi.compiled_processes == 1  # (the stub adds no other process)
        before = [p.detach().clone() for p in vae.parameters()]
        poison["on"] = True
        with pytest.raises(TrainingError, match="a gradient became NaN"):
            svi.step(x[:8], 1.0, shard=(slice(0, 8), 16))
    assert all(torch.equal(a, p) for a, p in zip(before, vae.parameters()))
