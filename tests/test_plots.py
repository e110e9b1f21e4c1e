"""Every picture, sample and latent file, made on small trained models (z=8 and z=2)."""

import json

import numpy as np
import pytest
import torch
from conftest import small_run
from matplotlib.image import imread
from test_cli import assert_one_line_error, run_cli

from pyro_vae import plots
from pyro_vae.inference.latents import posterior_moments
from pyro_vae.pipeline import plot_checkpoint

TILE = 28 + 2  # make_grid's default padding of 2 pixels


@pytest.fixture(scope="module")
def trained_z2(tmp_path_factory, data_dir):
    """A z=2 model, one epoch with a KL warm-up (so the training curves have a β panel)."""
    trainer = small_run(tmp_path_factory.mktemp("z2"), data_dir, epochs=2, latent_dim=2, warmup_epochs=2)
    trainer.fit()
    return trainer


def grey(path) -> np.ndarray:
    """A PNG written by save_image as a 2-D array in [0, 1] (its three channels are equal)."""
    image = imread(path)
    assert np.array_equal(image[..., 0], image[..., 1])
    return image[..., 0]


def tile(image: np.ndarray, row: int, col: int) -> np.ndarray:
    return image[2 + row * TILE : 2 + row * TILE + 28, 2 + col * TILE : 2 + col * TILE + 28]


def test_plot_writes_every_picture(trained, data_dir, tmp_path, capsys):
    code, out, _ = run_cli(
        [
            "plot",
            "--checkpoint",
            trained.checkpoint_path,
            "--out",
            tmp_path / "pics",
            "--data-dir",
            data_dir,
            "--num-points",
            600,
        ],
        capsys,
    )
    assert code == 0
    names = {"reconstructions", "prior_samples", "latent_scatter", "interpolations", "training_curves"}
    for name in names:
        assert f"wrote {tmp_path / 'pics' / name}.png" in out
        assert imread(tmp_path / "pics" / f"{name}.png").shape[0] > 100
    assert "no manifold.png: needs one 2-D latent layer (this model has 8)" in out
    assert sorted(p.name for p in (tmp_path / "pics").iterdir()) == sorted(f"{n}.png" for n in names)


def test_reconstructions_put_inputs_above_their_reconstructions(trained, test_images, tmp_path):
    vae, x = trained.vae, test_images["dynamic"][:32]
    image = grey(plots.save_grid(plots.reconstruction_grid(vae, x), tmp_path / "r.png"))
    assert image.shape == (2 + 8 * TILE, 2 + 8 * TILE)  # 4 input rows + 4 reconstruction rows of 8
    recon = plots.decode(vae, posterior_moments(vae, x)[0])
    for k in (0, 9, 31):
        row, col = divmod(k, 8)
        assert tile(image, 2 * row, col) == pytest.approx(x[k].view(28, 28).numpy(), abs=1 / 255)
        assert tile(image, 2 * row + 1, col) == pytest.approx(recon[k, 0].numpy(), abs=1 / 255)


def test_interpolations_run_between_the_two_images(trained, test_images):
    vae, x = trained.vae, test_images["dynamic"][:6]
    grid = plots.interpolation_grid(vae, x[:3], x[3:], steps=5)
    assert grid.shape[1:] == (2 + 3 * TILE, 2 + 7 * TILE)
    ends = plots.decode(vae, posterior_moments(vae, x)[0])
    at = lambda r, c: grid[0, 2 + r * TILE : 2 + r * TILE + 28, 2 + c * TILE : 2 + c * TILE + 28]  # noqa: E731
    for r in range(3):
        assert torch.equal(at(r, 0), x[r].view(28, 28)) and torch.equal(at(r, 6), x[3 + r].view(28, 28))
        assert at(r, 1) == pytest.approx(ends[r, 0], abs=1e-6)  # t = 0: the first image's posterior mean
        assert at(r, 5) == pytest.approx(ends[3 + r, 0], abs=1e-6)  # t = 1: the second's


def test_latent_scatter_axes_say_what_is_plotted(trained, trained_z2, test_images):
    x, labels = test_images["dynamic"][:300], torch.arange(300) % 10
    names = [str(i) for i in range(10)]
    fig = plots.latent_scatter(posterior_moments(trained.vae, x)[0], labels, names)
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("PC1 of the 8-D posterior means (") and "% of variance" in ax.get_ylabel()
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == names
    fig = plots.latent_scatter(posterior_moments(trained_z2.vae, x)[0], labels, names)
    assert fig.axes[0].get_xlabel() == r"$z_1$ (posterior mean)"
    assert fig.axes[0].get_ylabel() == r"$z_2$ (posterior mean)"


def test_pca_projection_keeps_a_plane():
    torch.manual_seed(0)
    plane = torch.randn(200, 2) * torch.tensor([3.0, 1.0])
    basis = torch.linalg.qr(torch.randn(6, 2))[0]  # orthonormal columns
    points = plane @ basis.T + 5.0
    projected, explained = plots.pca_2d(points)
    assert explained.sum() == pytest.approx(1.0, abs=1e-5) and explained[0] > explained[1]
    distances = lambda p: (p[:, None] - p[None]).norm(dim=-1)  # noqa: E731
    assert distances(projected) == pytest.approx(distances(plane), abs=1e-3)  # a rotation (and maybe a flip)


def test_manifold_decodes_the_inverse_cdf_grid(trained_z2, trained, data_dir, tmp_path):
    vae = trained_z2.vae
    values = plots.manifold_values(5)
    assert values[2] == 0 and values[0] == pytest.approx(-1.6449, abs=1e-4) and torch.equal(values, -values.flip(0))
    grid, _ = plots.manifold_grid(vae, 5)
    assert grid.shape[1:] == (5 * 28, 5 * 28)
    # Top left: smallest z1, largest z2; bottom right: largest z1, smallest z2.
    corners = plots.decode(vae, torch.tensor([[values[0], values[-1]], [values[-1], values[0]]]))
    assert grid[0, :28, :28] == pytest.approx(corners[0, 0], abs=1e-6)
    assert grid[0, -28:, -28:] == pytest.approx(corners[1, 0], abs=1e-6)
    written, skipped = plot_checkpoint(trained_z2.checkpoint_path, tmp_path, data_dir=data_dir, num_points=100)
    assert tmp_path / "manifold.png" in written and not skipped
    assert imread(tmp_path / "manifold.png").shape[0] > 500
    with pytest.raises(Exception, match="needs one 2-D latent layer"):
        plots.manifold_grid(trained.vae)


def test_the_classic_10_by_10_manifold_with_a_wider_range(trained_z2):
    """``plot --manifold-size 10 --manifold-mass 0.99``: the Keras example's walk, reaching z = +-2.58."""
    grid, values = plots.manifold_grid(trained_z2.vae, 10, mass=0.99)
    assert grid.shape[1:] == (10 * 28, 10 * 28) and len(values) == 10
    assert values[0] == pytest.approx(-2.5758, abs=1e-4) and values[-1] == pytest.approx(2.5758, abs=1e-4)


def test_training_curves_show_beta_only_when_annealing(trained, trained_z2, tmp_path):
    fig = plots.training_curves(trained.metrics)
    assert len(fig.axes) == 1
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["train ELBO (−loss)", "validation ELBO"]
    line = fig.axes[0].get_lines()[0]
    assert list(line.get_ydata()) == [-m["train_loss"] for m in trained.metrics]
    fig = plots.training_curves(trained_z2.metrics)
    assert len(fig.axes) == 2 and "β" in fig.axes[1].get_ylabel()
    assert list(fig.axes[1].get_lines()[0].get_ydata()) == [0.5, 1.0]
    assert imread(plots.save_figure(fig, tmp_path / "c.png")).shape[0] > 300


def test_training_curves_take_the_last_record_of_a_repeated_epoch(trained, data_dir, tmp_path):
    from pyro_vae.training.trainer import read_metrics

    lines = [json.dumps(m) for m in trained.metrics]
    (tmp_path / "metrics.jsonl").write_text(
        "\n".join([lines[0], lines[1], lines[1].replace('"epoch": 2', '"epoch": 1')])
    )
    assert [m["epoch"] for m in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]
    (tmp_path / "metrics.jsonl").write_text("{not json\n")
    with pytest.raises(Exception, match="line 1: not a metrics record"):
        read_metrics(tmp_path / "metrics.jsonl")


def test_sample_png_and_npy(trained, tmp_path, capsys):
    ckpt = trained.checkpoint_path
    code, out, _ = run_cli(["sample", "--checkpoint", ckpt, "-n", 10, "--out", tmp_path / "s.png"], capsys)
    assert code == 0 and "wrote 10 samples" in out
    assert grey(tmp_path / "s.png").shape == (2 + 3 * TILE, 2 + 4 * TILE)  # ceil(sqrt(10)) = 4 per row
    for pixels in ("mean", "sample"):
        code, _, _ = run_cli(
            [
                "sample",
                "--checkpoint",
                ckpt,
                "-n",
                10,
                "--out",
                tmp_path / f"{pixels}.npy",
                "--pixels",
                pixels,
                "--seed",
                3,
            ],
            capsys,
        )
        assert code == 0
    means, draws = np.load(tmp_path / "mean.npy"), np.load(tmp_path / "sample.npy")
    assert means.shape == draws.shape == (10, 1, 28, 28) and means.dtype == np.float32
    assert 0 < means.min() and means.max() < 1 and set(np.unique(draws)) <= {0.0, 1.0}  # Bernoulli draws
    torch.manual_seed(3)
    z = trained.vae.prior().sample((10,))
    assert means == pytest.approx(plots.decode(trained.vae, z).numpy(), abs=1e-6)  # same seed, same z


def test_encode_writes_means_scales_and_labels(trained, data_dir, tmp_path, capsys):
    out = tmp_path / "deep" / "latents.npz"
    code, stdout, _ = run_cli(
        [
            "encode",
            "--checkpoint",
            trained.checkpoint_path,
            "--out",
            out,
            "--data-dir",
            data_dir,
            "--limit",
            120,
            "--batch-size",
            50,
        ],
        capsys,
    )
    assert code == 0 and "(120 x 8)" in stdout
    with np.load(out) as f:
        assert f["means"].shape == f["scales"].shape == (120, 8) and (f["scales"] > 0).all()
        assert str(f["dataset"]) == "mnist" and str(f["split"]) == "test" and str(f["binarize"]) == "dynamic"
        from pyro_vae import DataConfig, VAEData

        data = VAEData(DataConfig("mnist", "dynamic"), data_dir, splits=("test",))
        assert (f["labels"] == data.labels["test"][:120].numpy()).all()
        loc, scale = trained.vae.guide_family.loc_scale(trained.vae.encoder(data.observed("test")[:120]))
        assert f["means"] == pytest.approx(loc.detach().numpy(), abs=1e-5)
        assert f["scales"] == pytest.approx(scale.detach().numpy(), rel=1e-5)


BAD = {
    "sample to a text file": (["sample", "--out", "{tmp}/s.txt"], "must end in .png or .npy"),
    "no samples": (["sample", "-n", "0", "--out", "{tmp}/s.png"], "-n"),
    "sample into a folder": (["sample", "--out", "{tmp}"], "must end in"),
    "encode to png": (["encode", "--out", "{tmp}/l.png"], "must end in .npz"),
    "too few points": (["plot", "--out", "{tmp}/p", "--num-points", "5"], "--num-points"),
    "pixels": (["sample", "--out", "{tmp}/s.png", "--pixels", "max"], "--pixels"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_picture_options(case, trained, data_dir, tmp_path, capsys):
    args, message = BAD[case]
    args = [a.format(tmp=tmp_path) for a in args]
    code, _, err = run_cli([*args, "--checkpoint", trained.checkpoint_path], capsys)
    assert_one_line_error(code, err, message)


@pytest.mark.parametrize("command", ["plot", "sample", "encode"])
def test_missing_checkpoint_is_one_line(command, tmp_path, capsys):
    out = {"plot": tmp_path / "p", "sample": tmp_path / "s.png", "encode": tmp_path / "l.npz"}[command]
    code, _, err = run_cli([command, "--checkpoint", tmp_path / "nope.pt", "--out", out], capsys)
    assert_one_line_error(code, err, "no checkpoint file")
    assert not out.exists() or not any(out.iterdir())


def test_plot_every_writes_grids_without_changing_training(tmp_path, data_dir):
    plain = small_run(tmp_path / "plain", data_dir, epochs=2, train_limit=500)
    plain.fit()
    plotted = small_run(tmp_path / "plotted", data_dir, epochs=2, train_limit=500, plot_every=1)
    plotted.fit()
    names = sorted(p.name for p in (tmp_path / "plotted" / "plots").iterdir())
    assert names == [
        "reconstructions_epoch001.png",
        "reconstructions_epoch002.png",
        "samples_epoch001.png",
        "samples_epoch002.png",
    ]
    assert grey(tmp_path / "plotted" / "plots" / "samples_epoch002.png").shape == (2 + 8 * TILE,) * 2
    assert [m["train_loss"] for m in plotted.metrics] == [m["train_loss"] for m in plain.metrics]
    for a, b in zip(plain.vae.parameters(), plotted.vae.parameters()):
        assert torch.equal(a, b)


def test_a_failed_picture_write_keeps_the_old_file(trained, tmp_path, monkeypatch):
    target = plots.save_grid(plots.sample_grid(trained.vae, 4), tmp_path / "s.png")
    before = target.read_bytes()

    def broken_save_image(tensor, fp, format=None):
        with open(fp, "wb") as out:
            out.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(plots, "save_image", broken_save_image)
    with pytest.raises(OSError, match="disk full"):
        plots.save_grid(plots.sample_grid(trained.vae, 4), target)
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["s.png"]


def test_written_files_get_the_usual_permissions(trained, tmp_path):
    """The temporary file is private; the file put in its place is not."""
    import os

    mask = os.umask(0o022)
    try:
        path = plots.save_grid(plots.sample_grid(trained.vae, 4), tmp_path / "s.png")
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644
