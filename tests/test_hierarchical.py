"""VAEs with several latent layers: both guides' Pyro programs against the hand-written layered ELBO (and negative
controls that must fail), per-layer KL and active units, training, resume, export, pictures and bad input."""

import pyro
import pytest
import torch
from conftest import small_run
from pyro.infer import TraceMeanField_ELBO

from pyro_vae import Bernoulli, NetConfig, StandardNormal, evaluate
from pyro_vae.errors import AgreementError, ConfigError
from pyro_vae.inference.bounds import AGREEMENT_Z_LIMIT, elbo_per_image
from pyro_vae.inference.layered import analytic_layered_elbo
from pyro_vae.model.config import ModelConfig
from pyro_vae.model.guides import DiagonalGaussianGuide, LadderGuide
from pyro_vae.model.hierarchical import HierarchicalVAE, _normal, loc_scale, precision_weighted
from pyro_vae.model.priors import MixtureOfGaussians
from pyro_vae.model.vae import _kl_weight

NET = NetConfig(hidden=(64,))


def _hvae(guide="diagonal", dims=(8, 4), prior=None, cls=HierarchicalVAE):
    torch.manual_seed(0)
    family = (LadderGuide if guide == "ladder" else DiagonalGaussianGuide)(dims[0])
    prior = prior or StandardNormal(dims[-1])
    return cls(NET, prior, Bernoulli(), family, image_shape=(1, 28, 28), latent_dims=dims, layer_hidden=(32,))


@pytest.fixture(scope="module")
def images(test_images):
    return test_images["dynamic"][:300]


def paired_z(a, b):
    d = (a - b).double()
    return (d.mean() / (d.std() / len(d) ** 0.5)).item()


def test_precision_weighting_is_the_normalised_product_of_two_gaussians():
    loc, scale = precision_weighted(torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([1.0]))
    assert loc.item() == pytest.approx(1.0) and scale.item() == pytest.approx(0.5**0.5)
    # a far tighter second Gaussian wins
    loc, scale = precision_weighted(torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([5.0]), torch.tensor([1e-3]))
    assert loc.item() == pytest.approx(5.0, abs=1e-4) and scale.item() == pytest.approx(1e-3, rel=1e-4)


@pytest.mark.parametrize("guide", ["diagonal", "ladder"])
def test_the_torch_draws_are_pyros_draws_and_the_log_weights_follow(guide, images):
    """Exactly, not only on average: the guide's draws written in torch (the cross-check's) are the Pyro guide's
    under the same seed, with several particles, and log p(x, z) - log q(z | x) built from them by hand is Pyro's."""
    from pyro_vae.inference.bounds import log_weights
    from pyro_vae.inference.layered import diagonal_normal_log_density

    vae, x, particles = _hvae(guide, dims=(8, 6, 4)), images[:16], 3
    torch.manual_seed(11)
    pyro_log_w = log_weights(vae, x, particles)
    torch.manual_seed(11)
    eps = [torch.randn(particles, 16, d) for d in vae.draw_dims]
    layers = vae.sample_layers(x, eps)
    hand = vae.likelihood.log_prob(vae.decode(layers[0].z), x) + vae.prior().log_prob(layers[-1].z)
    for layer in layers:
        hand = hand - diagonal_normal_log_density(layer.z, layer.q_loc, layer.q_scale)
        if layer.p is not None:
            hand = hand + diagonal_normal_log_density(layer.z, *layer.p)
    assert pyro_log_w.shape == (particles, 16)
    assert torch.allclose(pyro_log_w, hand, rtol=1e-5, atol=1e-3)
    torch.manual_seed(12)  # the control: other draws give other weights
    assert not torch.allclose(log_weights(vae, x, particles), hand, rtol=1e-5, atol=1e-3)


def test_the_ladder_meanfield_elbo_equals_the_handwritten_layered_elbo(images):
    """Top-down, every layer's KL has a closed form at the sampled parent: Pyro's TraceMeanField_ELBO and the
    hand-written ELBO are the same numbers on the same draws (three layers, so a middle layer is covered)."""
    vae = _hvae("ladder", dims=(8, 6, 4))
    x = images[:64]
    pyro.set_rng_seed(7)
    pyro_loss = TraceMeanField_ELBO().loss(vae.model, vae.guide, x)
    pyro.set_rng_seed(7)
    terms = analytic_layered_elbo(vae, x)
    assert terms.kl_method == "analytic" and terms.layer_kl.shape == (3, 64)
    assert pyro_loss == pytest.approx(-terms.elbo.sum().item(), rel=2e-6)
    assert torch.allclose(terms.layer_kl.sum(0), terms.kl)


@pytest.mark.parametrize("guide", ["diagonal", "ladder"])
def test_both_guides_bounds_agree_with_the_handwritten_elbo(guide, images):
    vae = _hvae(guide)
    result = evaluate(vae, images, num_particles=2, iw_samples=20, seed=3)
    s = result.summary()
    assert abs(result.agreement_z) < AGREEMENT_Z_LIMIT, s
    assert s["kl_method"] == ("analytic" if guide == "ladder" else "partly monte-carlo")
    assert s["iwae"] > s["elbo"]
    assert len(s["kl_per_layer"]) == 2 and sum(s["kl_per_layer"]) == pytest.approx(s["kl"], rel=1e-5)
    assert s["latent_dims"] == [8, 4] and len(s["active_units_per_layer"]) == 2 and s["latent_dim"] == 12


def test_a_top_prior_without_a_closed_form_kl_is_checked_by_monte_carlo(images):
    vae = _hvae("ladder", prior=MixtureOfGaussians(4, num_components=3))
    result = evaluate(vae, images, iw_samples=0, seed=1)
    assert result.kl_method == "partly monte-carlo" and abs(result.agreement_z) < AGREEMENT_Z_LIMIT


@pytest.mark.parametrize("guide", ["diagonal", "ladder"])
def test_negative_control_a_handwritten_elbo_missing_a_layers_kl_fails(guide, images):
    vae = _hvae(guide)
    with torch.no_grad():  # posteriors away from the priors, as after training: each layer's KL well above 0
        for net in (vae.encoder, *vae.upward):
            last = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
            last.weight.mul_(3)
            last.bias.mul_(3)
    pyro.set_rng_seed(5)
    pyro_elbo = elbo_per_image(vae, images)
    pyro.set_rng_seed(5)
    hand = analytic_layered_elbo(vae, images)
    assert abs(paired_z(pyro_elbo, hand.elbo)) < AGREEMENT_Z_LIMIT
    for layer in range(2):
        assert abs(paired_z(pyro_elbo, hand.elbo + hand.layer_kl[layer])) > AGREEMENT_Z_LIMIT


class ModelWithSwappedParents(HierarchicalVAE):
    """A wrong program: z1's conditional reads z3 instead of its parent z2 (the hand-written ELBO reads z2)."""

    def model(self, batch, kl_scale=1.0):
        self._register("decoder", "prior", "likelihood", "conditionals")
        with pyro.plate("data", batch.shape[0]):
            with _kl_weight(kl_scale):
                z3 = pyro.sample("z3", self.prior())
                z2 = pyro.sample("z2", _normal(*loc_scale(self.conditionals[1](z3))))
                z1 = pyro.sample("z1", _normal(*loc_scale(self.conditionals[0](z3))))
            pyro.sample("x", self.likelihood(self.decoder(z1)), obs=batch)
            del z2


@pytest.mark.parametrize("guide", ["diagonal", "ladder"])
def test_negative_control_a_model_with_swapped_parents_fails_the_check(guide, images):
    dims = (6, 6, 6)
    right = _hvae(guide, dims)
    with torch.no_grad():  # as after training: locs that follow the parent, and z2 distributed unlike z3
        for net in right.conditionals:
            last = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
            last.weight[:6].mul_(3)
            last.bias[:6].mul_(3)
        [m for m in right.upward[0].modules() if isinstance(m, torch.nn.Linear)][-1].bias[:6].add_(2.0)
    evaluate(right, images, iw_samples=0).check_agreement()
    wrong = _hvae(guide, dims, cls=ModelWithSwappedParents)
    wrong.load_state_dict(right.state_dict())
    with pytest.raises(AgreementError, match="disagree"):
        evaluate(wrong, images, iw_samples=0).check_agreement()


def test_generate_descend_and_moments_deal_in_all_layers_side_by_side(images):
    vae = _hvae("ladder")
    z = vae.generate(5)
    assert z.shape == (5, 12)
    assert torch.equal(vae.decode(z), vae.decode(z[:, :8])) and not torch.equal(vae.decode(z), vae.decode(z[:, 4:]))
    top = torch.randn(3, 4)
    a, b = vae.descend(top), vae.descend(top)
    assert torch.equal(a[:, 8:], top) and torch.equal(b[:, 8:], top)  # the top is kept ...
    assert not torch.allclose(a[:, :8], b[:, :8])  # ... and the layer below drawn again
    torch.manual_seed(0)
    means, scales = vae.moments(images[:10], 64)
    assert means.shape == scales.shape == (10, 12) and bool((scales > 0).all())
    estimates = vae.estimates(images[:10])  # the ladder's top layer: q(z2 | x) is its estimate, exactly
    assert torch.allclose(means[:, 8:], estimates[-1][0]) and torch.allclose(scales[:, 8:], estimates[-1][1])


def test_refused_combinations():
    def resolved(**settings):
        model = ModelConfig(**{"structure": "hierarchical", "latent_dims": (8, 4), **settings})
        return model.resolved()

    assert resolved().latent_dim == 12 and resolved().layer_hidden == (100, 100)
    with pytest.raises(ConfigError, match="2 to 16 latent layers"):
        resolved(latent_dims=(8,))
    with pytest.raises(ConfigError, match="at most 16 entries"):
        resolved(latent_dims=tuple(range(1, 20)))
    with pytest.raises(ConfigError, match="applies to --structure hierarchical"):
        ModelConfig(latent_dims=(8, 4)).resolved()
    with pytest.raises(ConfigError, match="cannot serve a layer"):
        model = ModelConfig(structure="hierarchical", latent_dims=(8, 4))
        model.guide.name = "iaf"
        model.resolved()
    with pytest.raises(ConfigError, match="needs --structure hierarchical"):
        model = ModelConfig()
        model.guide.name = "ladder"
        model.resolved()
    with pytest.raises(ConfigError, match="top prior"):
        model = ModelConfig(structure="hierarchical", latent_dims=(8, 4))
        model.prior.name = "vamp"
        model.resolved()
    with pytest.raises(ConfigError, match="one latent layer"):
        from pyro_vae import VAE

        VAE(NET, StandardNormal(4), Bernoulli(), image_shape=(1, 28, 28), latent_dims=(8, 4))
    with pytest.raises(ConfigError, match="cannot serve a layer"):
        from pyro_vae.model.guides import FullCovGaussianGuide

        HierarchicalVAE(
            NET, StandardNormal(4), Bernoulli(), FullCovGaussianGuide(8), image_shape=(1, 28, 28), latent_dims=(8, 4)
        )
    with pytest.raises(ConfigError, match="needs --structure hierarchical"):
        from pyro_vae import VAE

        VAE(NET, StandardNormal(8), Bernoulli(), LadderGuide(8), image_shape=(1, 28, 28))
    with pytest.raises(ConfigError, match="needs --guide ladder"):
        HierarchicalVAE.check_objective("meanfield", DiagonalGaussianGuide)
    HierarchicalVAE.check_objective("meanfield", LadderGuide)


@pytest.fixture(scope="module")
def trained_ladder(tmp_path_factory, data_dir):
    trainer = small_run(
        tmp_path_factory.mktemp("ladder"),
        data_dir,
        epochs=2,
        structure="hierarchical",
        latent_dims=(8, 4),
        guide=LadderGuide(8),
        train_limit=3000,
    )
    trainer.fit()
    return trainer


@pytest.mark.slow
def test_a_ladder_trains_resumes_exports_and_draws(trained_ladder, tmp_path, images):
    from pyro_vae.pipeline import plot_checkpoint, resume_run
    from pyro_vae.sharing import export_checkpoint, load

    vals = [m["val_elbo"] for m in trained_ladder.metrics]
    assert vals[1] > vals[0] > -300
    ckpt = trained_ladder.out_dir / "ckpt.pt"
    resumed = resume_run(ckpt, epochs=3, out_dir=tmp_path / "resumed", device="cpu", progress=False)
    assert isinstance(resumed.vae, HierarchicalVAE) and resumed.vae.top_down and resumed.vae.latent_dims == (8, 4)
    model = load(export_checkpoint(ckpt, tmp_path / "exported"), device="cpu")
    assert isinstance(model, HierarchicalVAE) and model.top_down
    torch.manual_seed(0)
    a = model.moments(images[:20], 16)[0]
    torch.manual_seed(0)
    assert torch.equal(a, trained_ladder.vae.moments(images[:20], 16)[0])
    written, _ = plot_checkpoint(ckpt, tmp_path / "plots", num_points=200, device="cpu")
    assert "layers.png" in {p.name for p in written}, written


@pytest.mark.slow
def test_the_command_line_trains_reports_layers_and_refuses_bad_input(tmp_path, data_dir, capsys):
    from test_cli import TINY, assert_one_line_error, run_cli

    out = tmp_path / "run"
    args = ["train", "--structure", "hierarchical", "--latent-dims", "8,4", "--data-dir", data_dir, *TINY]
    code, _, err = run_cli([*args, "--epochs", "1", "--out", out], capsys)
    assert code == 0, err
    code, stdout, _ = run_cli(["elbo", "--checkpoint", out / "ckpt.pt", "--limit", "200", "--iw-samples", "5"], capsys)
    assert code == 0 and "layer z1: E_q[log q - log p]" in stdout and "layer z2: E_q" in stdout, stdout
    assert "active units" in stdout and "partly monte-carlo" in stdout
    for bad, message in (
        (["--latent-dims", "8"], "2 to 16 latent layers"),
        (["--latent-dims", "8,0"], "--latent-dims"),
        (["--latent-dims", "900000,900000"], "latent units in all"),
        (["--latent-dims", "8,4", "--guide", "full-cov"], "cannot serve a layer"),
        (["--latent-dims", "8,4", "--objective", "meanfield"], "needs --guide ladder"),
    ):
        bad_args = ["train", "--structure", "hierarchical", *bad, "--data-dir", data_dir, *TINY]
        code, _, err = run_cli([*bad_args, "--out", tmp_path / "bad"], capsys)
        assert_one_line_error(code, err, message)
        assert code == 2 and not (tmp_path / "bad").exists()
    code, _, err = run_cli(["train", "--resume", out / "ckpt.pt", "--structure", "vae", "--epochs", "2"], capsys)
    assert_one_line_error(code, err, "cannot change on --resume")
