"""`pyro-vae elbo`'s numbers: the IWAE bound in chunks, K=1 = ELBO, active units, per-class rows, outputs."""

import json
import math

import numpy as np
import pyro
import pytest
import torch
from test_cli import assert_one_line_error, run_cli

import pyro_vae.inference.bounds as bounds
from pyro_vae import VAE, Bernoulli, FullCovGaussianGuide, IAFGuide, NetConfig, StandardNormal, evaluate
from pyro_vae.inference.latents import active_units, latent_variances, posterior_moments


def fixed_model() -> tuple[VAE, torch.Tensor, torch.Tensor]:
    """A 5-D model with known encoder weights: unit 1's mean ignores the image (variance exactly 0),
    unit 3's barely moves (variance about 1e-4); units 0, 2 and 4 vary. Returns it and the two
    encoder layers' weights as float64 arrays for the hand computation."""
    torch.manual_seed(0)
    vae = VAE(NetConfig("mlp", (6,)), StandardNormal(5), Bernoulli(), image_shape=(1, 28, 28))
    first, head = vae.encoder.net[0], vae.encoder.net[2]
    with torch.no_grad():
        first.weight.copy_(torch.randn(6, 784) * 0.2)
        first.bias.copy_(torch.randn(6) * 0.1)
        head.weight.copy_(torch.randn(10, 6))  # rows 0-4: the means, rows 5-9: the log-variances
        head.bias.copy_(torch.randn(10))
        head.weight[1] = 0.0
        head.weight[3] *= 0.002
    return vae, first, head


def test_active_units_match_a_hand_computation(test_images):
    vae, first, head = fixed_model()
    x = test_images["dynamic"][:300]
    # By hand, in float64 NumPy: mu = W2 relu(W1 x + b1) + b2, then the variance over images (n - 1).
    w1, b1 = first.weight.detach().double().numpy(), first.bias.detach().double().numpy()
    w2, b2 = head.weight.detach().double().numpy()[:5], head.bias.detach().double().numpy()[:5]
    mu = np.maximum(x.double().numpy() @ w1.T + b1, 0) @ w2.T + b2
    by_hand = mu.var(axis=0, ddof=1)
    assert by_hand[1] == 0 and 0 < by_hand[3] < 1e-3 and (by_hand[[0, 2, 4]] > 0.01).all()

    means, _ = posterior_moments(vae, x, batch_size=128)
    assert latent_variances(means).numpy() == pytest.approx(by_hand, rel=1e-4, abs=1e-9)
    assert active_units(means) == 3
    summary = evaluate(vae, x, iw_samples=0, batch_size=128).summary()
    assert summary["active_units"] == 3 and summary["latent_dim"] == 5
    assert summary["latent_variances"] == pytest.approx(by_hand.tolist(), rel=1e-4, abs=1e-9)
    assert active_units(means, threshold=1e-5) == 4  # unit 3 is not exactly constant


def test_posterior_scales_are_the_marginal_standard_deviations(test_images):
    x = test_images["dynamic"][:20]
    torch.manual_seed(0)
    vae = VAE(NetConfig("mlp", (16,)), StandardNormal(3), Bernoulli(), FullCovGaussianGuide(3), image_shape=(1, 28, 28))
    means, scales = posterior_moments(vae, x)
    with torch.no_grad():
        q = vae.posterior(x)
    assert means == pytest.approx(q.mean, abs=1e-6) and scales == pytest.approx(q.variance.sqrt(), rel=1e-5)

    torch.manual_seed(0)
    iaf = VAE(NetConfig("mlp", (16,)), StandardNormal(3), Bernoulli(), IAFGuide(3), image_shape=(1, 28, 28))
    torch.manual_seed(1)
    means, scales = posterior_moments(iaf, x[:4], samples=20000)
    torch.manual_seed(2)
    with torch.no_grad():
        draws = iaf.posterior(x[:4]).sample((20000,))
    assert means == pytest.approx(draws.mean(0), abs=0.05) and scales == pytest.approx(draws.std(0), rel=0.05)


def test_iwae_with_one_sample_is_the_elbo_exactly(trained):
    x = trained.data.images["val"][:300]
    result = evaluate(trained.vae, x, num_particles=1, iw_samples=1, batch_size=128)
    assert torch.equal(result.iwae, result.elbo)


def test_chunks_combine_to_the_bound_over_all_samples(trained, monkeypatch):
    """With two particles per chunk, K=7 makes four passes; the running log-sum-exp equals the
    log-mean-exp of all seven log-weights drawn in the same order."""
    x = trained.data.images["val"][:50]
    vae = trained.vae
    monkeypatch.setattr(bounds, "_ELEMENTS_PER_CHUNK", 2 * 50 * 784)
    chunks = []
    with pyro.get_param_store().scope(), torch.no_grad():
        torch.manual_seed(3)
        chunked = bounds.iwae_bound(vae, x, 7, on_chunk=chunks.append)
        torch.manual_seed(3)
        parts = [bounds.log_weights(vae, x, m) for m in (2, 2, 2, 1)]
    assert chunks == [2, 2, 2, 1]
    all_seven = torch.logsumexp(torch.cat(parts), 0) - math.log(7)
    assert chunked == pytest.approx(all_seven, abs=1e-4)


def test_a_gpu_takes_the_particles_in_larger_passes(monkeypatch):
    """MNIST, 500 images a batch, K=5000: 10 particles a pass on the CPU, 171 on a large GPU (the H200 measurement
    in bounds.py), fewer on a small one; a number fixed by the card, whatever memory is free, so that a seed fixes
    the bound. (The card's memory is stubbed: no GPU is needed.)"""
    cards = {0: 141 * 2**30, 1: 8 * 2**30}
    monkeypatch.setattr(bounds, "_gpu_memory_bytes", lambda device: cards[device.index or 0])
    assert bounds.iwae_chunk(500, 784, 5000) == bounds.iwae_chunk(500, 784, 5000, "cpu") == 10
    assert bounds.iwae_chunk(500, 784, 5000, "cuda") == bounds.iwae_chunk(500, 784, 5000, "cuda:0") == 171
    assert bounds.iwae_chunk(500, 784, 5000, "cuda:1") == 8 * 2**30 // 256 // (500 * 784) == 85
    assert bounds.iwae_chunk(500, 784, 100, "cuda") == 100
    cards[1] = 2**20  # a card too small for even the CPU's budget keeps the CPU's
    assert bounds.iwae_chunk(500, 784, 5000, "cuda:1") == 10


def test_bound_tightens_with_k(trained):
    x = trained.data.images["val"][:400]
    values = {k: evaluate(trained.vae, x, iw_samples=k, latent_means=False).iwae for k in (1, 5, 50)}
    for small, large in ((1, 5), (5, 50)):
        gain = values[large] - values[small]  # paired: same images, shared first draws
        assert gain.mean() > -2 * gain.std() / math.sqrt(len(gain))
    assert values[50].mean() > values[1].mean()


def test_by_class_rows_add_up(trained):
    x, labels = trained.data.images["val"][:300], trained.data.labels["val"][:300]
    result = evaluate(trained.vae, x, iw_samples=5, labels=labels)
    rows = result.by_class()
    assert sorted(rows) == sorted(labels.unique().tolist())
    assert sum(row["n"] for row in rows.values()) == 300
    for name in ("elbo", "iwae", "recon", "kl"):
        pooled = sum(row["n"] * row[name] for row in rows.values()) / 300
        assert pooled == pytest.approx(result.summary()[name], abs=1e-3)
    some = next(iter(rows))
    assert rows[some]["elbo"] == pytest.approx(result.elbo[labels.cpu() == some].double().mean().item())
    with pytest.raises(ValueError):
        evaluate(trained.vae, x[:10], iw_samples=0).by_class()


def test_progress_bar_follows_the_chunks(trained, capsys, monkeypatch):
    updates = []

    class RecordingBar(bounds.tqdm):
        def update(self, n=1):
            updates.append(n)
            return super().update(n)

    monkeypatch.setattr(bounds, "tqdm", RecordingBar)
    monkeypatch.setattr(bounds, "_ELEMENTS_PER_CHUNK", 4 * 60 * 784)  # 4 particles per chunk
    evaluate(trained.vae, trained.data.images["val"][:100], iw_samples=10, batch_size=60, progress=True)
    assert "evaluating (K=10)" in capsys.readouterr().err
    # Each batch's images are shared over its 12 particle passes (1 Pyro ELBO, 1 analytic, 10 IWAE).
    # 60 images: the two ELBO passes, then IWAE chunks of 4, 4, 2 particles; the last 40 images: 6 and 4
    # (the same memory per chunk).
    assert updates == pytest.approx([5, 5, 20, 20, 10, 40 / 12, 40 / 12, 20, 40 / 3])
    assert sum(updates) == pytest.approx(100)


def test_elbo_cli_states_what_was_evaluated(trained, data_dir, capsys):
    ckpt = trained.checkpoint_path
    code, out, _ = run_cli(
        [
            "elbo",
            "--checkpoint",
            ckpt,
            "--data-dir",
            data_dir,
            "--limit",
            300,
            "--iw-samples",
            20,
            "--by-class",
            "--json",
        ],
        capsys,
    )
    assert code == 0
    d = json.loads(out)
    assert (d["dataset"], d["binarize"], d["split"], d["n"], d["iwae_k"]) == ("mnist", "dynamic", "test", 300, 20)
    assert d["active_units"] <= d["latent_dim"] == 8 and len(d["latent_variances"]) == 8
    assert d["peak_memory_mib"] > 0 and d["peak_memory_of"] == "process RSS" and d["iwae_chunk"] >= 1
    assert set(d["by_class"]) == {str(i) for i in range(10)} and d["by_class"]["3"]["name"] == "3"
    assert sum(row["n"] for row in d["by_class"].values()) == 300

    code, out, _ = run_cli(
        ["elbo", "--checkpoint", ckpt, "--data-dir", data_dir, "--limit", 300, "--iw-samples", 20, "--by-class"], capsys
    )
    assert code == 0
    assert "n=300  K=20" in out and "dynamic binarization" in out and "IWAE bound, K=20" in out
    assert f"active units (Var_x E_q[z_u] > 0.01)  {d['active_units']:5d} of 8" in out
    assert "peak memory" in out and "per class (test split)" in out
    assert f"{d['elbo']:10.3f}" in out  # same seed, same numbers as the JSON


def test_elbo_cli_rejects_impossible_options(trained, data_dir, capsys):
    for extra, message in ((["--iw-samples", "-1"], "--iw-samples"), (["--limit", "0"], "--limit")):
        code, _, err = run_cli(
            ["elbo", "--checkpoint", trained.checkpoint_path, "--data-dir", data_dir, *extra], capsys
        )
        assert_one_line_error(code, err, message)
