"""Any image data: each source's on-disk format (fabricated here, never downloaded), the same MNIST through three
doors, colour models end to end, streaming, and every bad-data error."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import assert_one_line_error, run_cli

import pyro_vae
from pyro_vae import DataConfig, NetConfig, RunConfig, VAEData, pipeline, start_run
from pyro_vae.data.sources import _read_idx_split
from pyro_vae.errors import ConfigError, DataError
from pyro_vae.model.config import ComponentConfig, ModelConfig
from pyro_vae.model.distributions import DiscretizedLogisticMixture
from pyro_vae.model.likelihoods import LogisticMixture

TINY_NET = NetConfig(kind="mlp", hidden=(32,))


def mnist_subset(data_dir, n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    train, _ = _read_idx_split("mnist", data_dir, True, False)
    test, _ = _read_idx_split("mnist", data_dir, False, False)
    return train[:n_train].numpy(), test[:n_test].numpy()


def write_images(folder, images: np.ndarray, labels=None, suffix=".png"):
    """One file per image (``(N, H, W)`` grey or ``(N, H, W, 3)`` colour), named in order; in class subfolders
    when ``labels`` are given."""
    for i, image in enumerate(images):
        sub = folder / f"class{labels[i]}" if labels is not None else folder
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(sub / f"{i:05d}{suffix}")


def colour_images(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth random colour images (uint8 ``(n, h, w, 3)``): blurred noise, so a tiny model learns something."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, max(1, h // 8), max(1, w // 8), generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return (smooth * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def tiny_config(dataset, root, *, binarize="dynamic", val_size=0, epochs=1, **data) -> RunConfig:
    config = RunConfig(
        data=DataConfig(dataset, binarize, val_size=val_size, root=str(root), **data),
        model=ModelConfig(latent_dim=4, net=TINY_NET),
    )
    config.schedule.epochs, config.optimizer.batch_size = epochs, 100
    return config


def train(config: RunConfig, out):
    trainer = start_run(config, out, device="cpu", progress=False)
    trainer.fit()
    return trainer


# -- the same MNIST through three doors ------------------------------------------------------------------------------


def test_three_doors_give_the_same_run_and_test_elbo(data_dir, tmp_path):
    train_images, test_images = mnist_subset(data_dir, 600, 200)
    write_images(tmp_path / "folder" / "train", train_images)
    write_images(tmp_path / "folder" / "test", test_images)
    np.savez(tmp_path / "mnist.npz", train=train_images, test=test_images)
    doors = {
        "torchvision": tiny_config("mnist", data_dir, train_limit=600),
        "folder": tiny_config("folder", tmp_path / "folder"),
        "array": tiny_config("array", tmp_path / "mnist.npz"),
    }
    states, bounds = {}, {}
    for name, config in doors.items():
        trainer = train(config, tmp_path / name)
        states[name] = trainer.vae.state_dict()
        result, _ = pipeline.evaluate_checkpoint(trainer.checkpoint_path, limit=200, iw_samples=5, device="cpu")
        bounds[name] = result.summary()
        assert trainer.config.data.shape == (1, 28, 28)
    for name in ("folder", "array"):
        assert all(torch.equal(states[name][k], v) for k, v in states["torchvision"].items()), name
        assert (
            bounds[name]["elbo"] == bounds["torchvision"]["elbo"]
            and bounds[name]["iwae"] == bounds["torchvision"]["iwae"]
        )


# -- colour models end to end ------------------------------------------------------------------------------------


COLOUR_TRAIN = [
    "--binarize",
    "none",
    "--likelihood",
    "logistic-mixture",
    "--mixture-components",
    "2",
    "--latent-dim",
    "4",
    "--hidden",
    "32",
    "--conv-channels",
    "8,16",
    "--epochs",
    "1",
    "--batch-size",
    "16",
    "--no-progress",
]


@pytest.mark.parametrize("net, size, labelled", [("resnet", 32, True), ("conv", 64, False)])
def test_a_colour_model_trains_reloads_passes_the_check_and_samples(net, size, labelled, tmp_path, capsys):
    images = colour_images(56, size + 16, size + 8)  # not the model's size: --image-size scales and crops
    labels = [i % 2 for i in range(56)] if labelled else None
    write_images(
        tmp_path / "data" / "train", images[:40], labels and labels[:40], suffix=".jpg" if labelled else ".png"
    )
    write_images(tmp_path / "data" / "test", images[40:], labels and labels[40:])
    out = tmp_path / "run"
    code, _, err = run_cli(
        [
            "train",
            "--dataset",
            "folder",
            "--data-dir",
            tmp_path / "data",
            "--image-size",
            size,
            "--net",
            net,
            "--val-size",
            "8",
            "--out",
            out,
            *COLOUR_TRAIN,
        ],
        capsys,
    )
    assert code in (0, None), err
    assert RunConfig.read_toml(out / "config.toml").data.shape == (3, size, size)
    code, stdout, err = run_cli(["elbo", "--checkpoint", out / "ckpt.pt", "--iw-samples", "3", "--json"], capsys)
    assert code in (0, None), err  # exit 0: the analytic-KL ELBO agreed with Pyro's
    result = json.loads(stdout)
    assert result["n"] == 16 and result["elbo_bits_per_dim"] > 0 and result["iwae_bits_per_dim"] > 0
    assert result["elbo"] == pytest.approx(-result["elbo_bits_per_dim"] * 3 * size * size * np.log(2), rel=1e-6)
    for suffix in (".npy", ".png"):
        code, _, err = run_cli(
            ["sample", "--checkpoint", out / "ckpt.pt", "-n", "6", "--out", tmp_path / f"s{suffix}"], capsys
        )
        assert code in (0, None), err
    assert np.load(tmp_path / "s.npy").shape == (6, 3, size, size)
    assert Image.open(tmp_path / "s.png").mode == "RGB"
    code, _, err = run_cli(["plot", "--checkpoint", out / "ckpt.pt", "--out", tmp_path / "plots"], capsys)
    assert code in (0, None), err
    assert (tmp_path / "plots" / "latent_scatter.png").is_file() and (
        tmp_path / "plots" / "reconstructions.png"
    ).is_file()
    code, _, err = run_cli(["encode", "--checkpoint", out / "ckpt.pt", "--out", tmp_path / "z.npz"], capsys)
    assert code in (0, None), err
    assert ("labels" in np.load(tmp_path / "z.npz").files) == labelled
    code, _, err = run_cli(["export", out / "ckpt.pt", tmp_path / "exported"], capsys)
    assert code in (0, None), err
    assert pyro_vae.load(tmp_path / "exported").image_shape == (3, size, size)
    if not labelled:
        code, _, err = run_cli(["elbo", "--checkpoint", out / "ckpt.pt", "--iw-samples", "0", "--by-class"], capsys)
        assert_one_line_error(code, err, "needs labelled images")


def test_elbo_data_dir_points_a_checkpoint_at_the_same_kind_of_source_elsewhere(tmp_path, capsys):
    images = colour_images(30, 16, 16)
    np.savez(tmp_path / "a.npz", train=images[:24], test=images[24:])
    np.savez(tmp_path / "b.npz", train=images[:24], test=images[24:])
    np.savez(tmp_path / "grey.npz", train=images[:24, :, :, 0], test=images[24:, :, :, 0])
    config = tiny_config("array", tmp_path / "a.npz", binarize="none", val_size=4)
    config = config.updated({"model.likelihood.name": "logistic-mixture", "model.net.kind": "conv"})
    trainer = train(config, tmp_path / "run")
    ckpt = trainer.checkpoint_path
    (tmp_path / "a.npz").unlink()
    result, info = pipeline.evaluate_checkpoint(ckpt, data_dir=tmp_path / "b.npz", iw_samples=0, device="cpu")
    assert result.summary()["n"] == 6 and "elbo_bits_per_dim" in result.summary()
    code, _, err = run_cli(["elbo", "--checkpoint", ckpt, "--data-dir", tmp_path / "grey.npz"], capsys)
    assert_one_line_error(code, err, "this run's are 3x16x16")


# -- streaming -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 1])
def test_a_streamed_run_equals_the_in_memory_run(workers, data_dir, tmp_path):
    train_images, test_images = mnist_subset(data_dir, 450, 10)
    write_images(tmp_path / "data" / "train", train_images)
    held = train(tiny_config("folder", tmp_path / "data", val_size=50, epochs=2), tmp_path / "held")
    streamed = train(
        tiny_config("folder", tmp_path / "data", val_size=50, epochs=2, stream=True, workers=workers),
        tmp_path / "streamed",
    )
    assert streamed.data.stream and not held.data.stream and "train" not in streamed.data.images
    assert all(torch.equal(streamed.vae.state_dict()[k], v) for k, v in held.vae.state_dict().items())
    assert [m["val_elbo"] for m in streamed.metrics] == [m["val_elbo"] for m in held.metrics]


def test_levels_become_correctly_rounded_floats():
    """``to_unit`` gives ``level / 255`` correctly rounded (numpy's float32 division), on the CPU by division and
    elsewhere from its table, which is checked here too. Negative control: CUDA's way of dividing by a scalar
    (a multiplication by the float32 reciprocal) is one ulp off for 126 levels, and the comparison sees it."""
    from pyro_vae.data.images import _UNIT_LEVELS, to_unit

    levels = torch.arange(256, dtype=torch.uint8).reshape(4, 1, 8, 8)
    exact = torch.from_numpy(np.arange(256, dtype=np.float32) / np.float32(255)).reshape(4, 1, 8, 8)
    assert torch.equal(to_unit(levels), exact) and torch.equal(_UNIT_LEVELS.reshape(4, 1, 8, 8), exact)
    assert torch.equal(_UNIT_LEVELS[levels.int()], exact)  # the lookup other devices make
    reciprocal = levels.float() * torch.tensor(1 / 255, dtype=torch.float32)
    assert (reciprocal != exact).sum() == 126


def test_streamed_batches_from_a_step_on_are_the_tail_of_the_epoch(data_dir, tmp_path):
    train_images, _ = mnist_subset(data_dir, 230, 0)
    write_images(tmp_path / "train", train_images)
    config = DataConfig("folder", val_size=0, root=str(tmp_path), stream=True, workers=0)
    data = VAEData(config)
    full = list(data.train_batches(50, seed=3))
    tail = list(data.train_batches(50, seed=3, skip=2))
    held = VAEData(DataConfig("folder", val_size=0, root=str(tmp_path)))
    assert len(full) == 5 and all(torch.equal(a, b) for a, b in zip(full[2:], tail))
    assert all(torch.equal(a, b) for a, b in zip(full, held.train_batches(50, seed=3)))


def test_a_lazy_source_too_big_for_memory_streams_by_itself(tmp_path, monkeypatch):
    write_images(tmp_path / "train", colour_images(12, 8, 8))
    monkeypatch.setattr("pyro_vae.data.vae_data.available_bytes", lambda device: 1000)
    data = VAEData(DataConfig("folder", val_size=2, root=str(tmp_path)))
    assert data.stream and any("streaming them from disk" in note for note in data.notes)


# -- torchvision's formats, fabricated -----------------------------------------------------------------------------


def test_cifar10_batches_are_read_as_colour_with_labels(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    images = np.random.default_rng(0).integers(0, 256, (6 * 4, 3, 32, 32), dtype=np.uint8)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        part = images[4 * i : 4 * i + 4]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": part.reshape(4, -1), "labels": [i, i, 9, 0]}, f, protocol=2)
    data = VAEData(DataConfig("cifar10", "none", val_size=4, root=str(tmp_path)))
    assert data.image_shape == (3, 32, 32) and data.count("train") == 16 and data.count("test") == 4
    assert torch.equal(data.images["test"], torch.from_numpy(images[20:]).flatten(1).float() / 255)
    assert data.labels["test"].tolist() == [5, 5, 9, 0] and data.class_names[9] == "truck"


def test_a_cifar_batch_that_would_run_code_is_refused(tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("this must never run",))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({"data": Boom(), "labels": []}, f)
    with pytest.raises(DataError, match="names builtins.print.*not loaded|not a CIFAR-10 batch"):
        VAEData(DataConfig("cifar10", "none", val_size=0, root=str(tmp_path)), splits=("test",))


def test_svhn_mat_files_are_read_with_digit_zero_as_class_zero(tmp_path):
    savemat = pytest.importorskip("scipy.io").savemat
    (tmp_path / "svhn").mkdir()
    rng = np.random.default_rng(1)
    for split, n in (("train", 10), ("test", 4)):
        savemat(
            tmp_path / "svhn" / f"{split}_32x32.mat",
            {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8), "y": np.full((n, 1), 10)},
        )
    data = VAEData(DataConfig("svhn", "none", val_size=2, root=str(tmp_path)))
    assert data.image_shape == (3, 32, 32) and data.count("train") == 8 and data.labels["test"].tolist() == [0] * 4


def test_celeba_uses_the_official_partition_and_resizes(tmp_path):
    folder = tmp_path / "celeba"
    images = colour_images(6, 218, 178)
    names = [f"{i:06d}.jpg" for i in range(1, 7)]
    for name, image in zip(names, images):
        (folder / "img_align_celeba").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / "img_align_celeba" / name)
    (folder / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, [0, 0, 0, 1, 2, 2])))
    data = VAEData(DataConfig("celeba", "none", root=str(tmp_path), image_size=(32,)))
    assert data.image_shape == (3, 32, 32) and [data.count(s) for s in ("train", "val", "test")] == [3, 1, 2]
    assert data.labels["train"] is None


def test_kmnist_idx_files_load_with_their_class_names(data_dir, tmp_path):
    (tmp_path / "KMNIST").symlink_to(data_dir / "MNIST", target_is_directory=True)  # the same idx format
    data = VAEData(DataConfig("kmnist", val_size=100, train_limit=200, root=str(tmp_path)), splits=("train", "test"))
    assert data.image_shape == (1, 28, 28) and data.class_names[1] == "ki" and data.count("test") == 10000


# -- arrays --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["NHW", "NHWC1", "NHWC", "NCHW"])
def test_each_array_layout_reads_the_same_images(layout, tmp_path):
    colour = colour_images(10, 8, 6)
    arrays = {"NHW": colour[..., 0], "NHWC1": colour[..., :1], "NHWC": colour, "NCHW": colour.transpose(0, 3, 1, 2)}
    np.save(tmp_path / "x.npy", arrays[layout])
    data = VAEData(DataConfig("array", "none", val_size=2, test_size=2, root=str(tmp_path / "x.npy")))
    expected = colour[:6, ..., :1] if layout in ("NHW", "NHWC1") else colour[:6]
    assert data.image_shape == (expected.shape[-1], 8, 6)
    assert torch.equal(data.images["train"], torch.from_numpy(expected).permute(0, 3, 1, 2).flatten(1).float() / 255)
    assert not data.notes


def test_an_ambiguous_array_shape_is_read_channels_last_and_said(tmp_path, capsys):
    np.savez(tmp_path / "x.npz", train=np.zeros((5, 3, 4, 3), dtype=np.uint8))
    data = VAEData(DataConfig("array", "none", val_size=1, test_size=1, root=str(tmp_path / "x.npz")))
    assert data.image_shape == (3, 3, 4) and "read images shaped (5, 3, 4, 3) as (N, H, W, C)" in data.notes[0]
    code, _, err = run_cli(
        [
            "train",
            "--dataset",
            "array",
            "--data-dir",
            tmp_path / "x.npz",
            "--binarize",
            "none",
            "--likelihood",
            "gaussian",
            "--val-size",
            "1",
            "--test-size",
            "1",
            "--epochs",
            "1",
            "--out",
            tmp_path / "run",
            "--no-progress",
        ],
        capsys,
    )
    assert code in (0, None) and "as (N, H, W, C)" in err


def test_float_arrays_and_labels_and_alpha(tmp_path):
    rgba = np.random.default_rng(0).random((8, 5, 5, 4)).astype(np.float32)
    np.savez(tmp_path / "x.npz", train=rgba, train_labels=np.arange(8), val=rgba[:2], val_labels=np.arange(2))
    data = VAEData(DataConfig("array", "none", test_size=2, root=str(tmp_path / "x.npz")))
    assert data.image_shape == (3, 5, 5) and data.count("val") == 2 and data.labels["test"].tolist() == [6, 7]
    assert torch.allclose(data.images["train"], torch.from_numpy(rgba[:6, ..., :3]).permute(0, 3, 1, 2).flatten(1))


def test_a_folder_and_an_array_convert_colour_to_grey_alike(tmp_path):
    colour = colour_images(6, 9, 7, seed=4)
    write_images(tmp_path / "f" / "train", colour)
    np.save(tmp_path / "x.npy", colour)
    a = VAEData(DataConfig("folder", "none", val_size=1, test_size=1, channels=1, root=str(tmp_path / "f")))
    b = VAEData(DataConfig("array", "none", val_size=1, test_size=1, channels=1, root=str(tmp_path / "x.npy")))
    assert a.image_shape == b.image_shape == (1, 9, 7) and torch.equal(a.images["train"], b.images["train"])
    grey_to_colour = VAEData(
        DataConfig("array", "none", val_size=1, test_size=1, channels=3, root=str(tmp_path / "x.npy"))
    )
    assert grey_to_colour.image_shape == (3, 9, 7)


# -- bad data ------------------------------------------------------------------------------------------------------


def _bad_folder(tmp_path, case):
    root = tmp_path / "d"
    (root / "train").mkdir(parents=True)
    if case == "no train folder":
        (root / "train").rmdir()
    elif case == "non-image file":
        write_images(root / "train", colour_images(2, 8, 8))
        (root / "train" / "notes.txt").write_text("hello")
    elif case == "unreadable image":  # (file names sort the bad file into the training split)
        write_images(root / "train", colour_images(4, 8, 8))
        (root / "train" / "00000a_broken.png").write_bytes(b"not a png at all")
    elif case == "mixed sizes":
        write_images(root / "train", colour_images(4, 8, 8))
        Image.fromarray(colour_images(1, 9, 8)[0]).save(root / "train" / "00000a_odd.png")
    elif case == "unknown val class":
        write_images(root / "train", colour_images(2, 8, 8), labels=[0, 1])
        write_images(root / "val", colour_images(1, 8, 8), labels=[7])
    return root


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty folder", "no images under"),
        ("no train folder", "has no train/ folder"),
        ("non-image file", "notes.txt is not an image"),
        ("unreadable image", "00000a_broken.png cannot be read as an image"),
        ("mixed sizes", "00000.png is 8x8 but"),
        ("unknown val class", "outside the classes of train/"),
    ],
)
def test_bad_folders_give_one_line_naming_the_problem(case, message, tmp_path, capsys):
    root = _bad_folder(tmp_path, case)
    code, _, err = run_cli(
        [
            "train",
            "--dataset",
            "folder",
            "--data-dir",
            root,
            "--binarize",
            "none",
            "--likelihood",
            "gaussian",
            "--val-size",
            "1",
            "--test-size",
            "1",
            "--epochs",
            "1",
            "--out",
            tmp_path / "run",
            "--no-progress",
        ],
        capsys,
    )
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "run" / "ckpt.pt").exists()


def test_image_size_makes_mixed_sizes_one(tmp_path):
    root = _bad_folder(tmp_path, "mixed sizes")
    data = VAEData(DataConfig("folder", "none", val_size=1, test_size=1, image_size=(6, 5), root=str(root)))
    assert data.image_shape == (3, 6, 5) and data.images["val"].shape == (1, 90)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"test": np.zeros((3, 4, 4), np.uint8)}, "has no array named 'train'"),
        ({"train": np.zeros((3, 4, 4), np.int32)}, "must be uint8 (0..255) or floats in [0, 1], got dtype int32"),
        ({"train": np.full((3, 4, 4), 2.0)}, "float images must lie in [0, 1]"),
        ({"train": np.zeros((3, 5, 4, 5), np.uint8)}, "images must be shaped (N, H, W)"),
        ({"train": np.zeros((3, 4, 4), np.uint8), "train_labels": np.zeros(2, int)}, "labels must be 3 integers"),
        ({"train": np.zeros((3, 4, 4), np.uint8), "extra": np.zeros(3)}, "has an array named 'extra'"),
    ],
)
def test_bad_arrays_give_one_line(arrays, message, tmp_path, capsys):
    np.savez(tmp_path / "x.npz", **arrays)
    code, _, err = run_cli(
        [
            "train",
            "--dataset",
            "array",
            "--data-dir",
            tmp_path / "x.npz",
            "--binarize",
            "none",
            "--likelihood",
            "gaussian",
            "--val-size",
            "1",
            "--test-size",
            "1",
            "--out",
            tmp_path / "run",
            "--no-progress",
        ],
        capsys,
    )
    assert_one_line_error(code, err, message)


def test_user_sources_need_a_data_dir_and_a_channel_count_the_likelihood_takes(tmp_path, capsys):
    code, _, err = run_cli(["train", "--dataset", "folder", "--out", tmp_path / "run"], capsys)
    assert_one_line_error(code, err, "--dataset folder needs --data-dir")
    code, _, err = run_cli(
        ["train", "--dataset", "array", "--data-dir", tmp_path / "x.csv", "--out", tmp_path / "r"], capsys
    )
    assert_one_line_error(code, err, "needs an .npz or .npy file")
    with pytest.raises(ConfigError, match="takes grey .* or RGB"):
        ModelConfig(likelihood=ComponentConfig("logistic-mixture")).build(image_shape=(2, 4, 4))


# -- the logistic mixture ----------------------------------------------------------------------------------------


def _mixture_params(k: int, channels: int, locations: int, batch=(2,)):
    torch.manual_seed(0)
    return torch.randn(*batch, 4 * k, channels * locations)


@pytest.mark.parametrize("channels", [1, 3])
def test_the_logistic_mixture_is_a_distribution_over_whole_pixels(channels):
    """Over every colour of one pixel (4 levels a channel), the probabilities sum to 1; the hand-written
    log-probability equals the distribution's; samples lie on the levels."""
    lik = LogisticMixture(image_shape=(channels, 1, 1), mixture_components=3, levels=4)
    params = _mixture_params(3, channels, 1, batch=())
    grid = torch.cartesian_prod(*[torch.linspace(0, 1, 4)] * channels).reshape(-1, channels)
    d = lik(params)
    assert d.event_shape == (channels,)
    assert torch.logsumexp(d.log_prob(grid), 0).exp().item() == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(lik.log_prob(params, grid), d.log_prob(grid), atol=1e-5)
    draws = d.sample((500,))
    assert draws.shape == (500, channels) and torch.equal(draws * 3, (draws * 3).round())
    assert d.mean.shape == (channels,) and ((0 <= d.mean) & (d.mean <= 1)).all()


def test_the_channel_dependence_moves_green_with_red():
    k, params = 1, torch.zeros(4, 3)  # one component, one pixel; coefficient slots (index 3) of the red channel
    params[3, 0] = 5.0  # alpha = tanh(5) ~ 1: green's location follows red
    d = DiscretizedLogisticMixture(*LogisticMixture((3, 1, 1), k)._parts(params))
    dark, bright = torch.tensor([0.0, 0.5, 0.5]), torch.tensor([1.0, 1.0, 0.5])
    pairs = d.log_prob(torch.stack([torch.tensor([0.0, 0.0, 0.5]), dark, torch.tensor([1.0, 0.5, 0.5]), bright]))
    assert pairs[0] > pairs[1] and pairs[3] > pairs[2]  # green near red is likelier either way


def test_an_in_memory_run_resumed_streamed_continues_the_same_run(data_dir, tmp_path):
    train_images, _ = mnist_subset(data_dir, 300, 0)
    write_images(tmp_path / "data" / "train", train_images)
    whole = train(tiny_config("folder", tmp_path / "data", val_size=50, epochs=2), tmp_path / "whole")
    first = train(tiny_config("folder", tmp_path / "data", val_size=50, epochs=1), tmp_path / "half")
    resumed = pipeline.resume_run(
        first.checkpoint_path, epochs=2, changes={"data.stream": True, "data.workers": 0}, device="cpu", progress=False
    )
    resumed.fit()
    assert resumed.data.stream
    assert all(torch.equal(resumed.vae.state_dict()[k], v) for k, v in whole.vae.state_dict().items())
    with pytest.raises(ConfigError, match="data.channels cannot change on --resume"):
        pipeline.resume_run(first.checkpoint_path, changes={"data.channels": 3}, device="cpu")


@pytest.mark.parametrize(
    "likelihood, prior, net",
    [
        ("gaussian", "vamp", "conv"),
        ("continuous-bernoulli", "mog", "mlp"),
        ("discretized-logistic", "standard-normal", "resnet"),
    ],
)
def test_grey_level_likelihoods_and_priors_work_on_colour_images(likelihood, prior, net, tmp_path):
    images = colour_images(40, 12, 10, seed=2)
    np.savez(tmp_path / "c.npz", train=images[:32], test=images[32:])
    config = tiny_config("array", tmp_path / "c.npz", binarize="none", val_size=8)
    config = config.updated(
        {
            "model.likelihood.name": likelihood,
            "model.prior.name": prior,
            "model.net.kind": net,
            "model.net.channels": [4, 8],
            "optimizer.batch_size": 8,
        }
    )
    if prior == "vamp":
        config = config.updated({"model.prior.num_components": 5})
    trainer = train(config, tmp_path / "run")
    result, _ = pipeline.evaluate_checkpoint(trainer.checkpoint_path, iw_samples=2, device="cpu")
    result.check_agreement()
    assert result.summary()["n"] == 8 and result.data_dim == 3 * 12 * 10
    assert pipeline.sample_checkpoint(trainer.checkpoint_path, 3, device="cpu").shape == (3, 3, 12, 10)


def test_a_missing_torchvision_set_outside_the_default_folder_is_not_downloaded(tmp_path):
    for dataset in ("cifar10", "svhn", "celeba"):
        with pytest.raises(DataError, match=f"no {dataset} dataset under"):
            VAEData(DataConfig(dataset, "none"), tmp_path, splits=("test",))  # a folder given: never downloaded to


def test_a_grey_folder_with_class_subfolders_is_labelled_by_folder_name(data_dir, tmp_path):
    images, _ = mnist_subset(data_dir, 12, 0)
    write_images(tmp_path / "train", images, labels=[3 * (i % 2) for i in range(12)])  # classes "class0", "class3"
    data = VAEData(DataConfig("folder", "none", val_size=2, test_size=2, root=str(tmp_path)))
    assert data.image_shape == (1, 28, 28) and data.class_names == ["class0", "class3"]
    order = sorted(range(12), key=lambda i: (f"class{3 * (i % 2)}", i))  # sorted path order: class by class
    assert data.labels["train"].tolist() == [int(order[i] % 2) for i in range(8)]
    expected = torch.from_numpy(images[order[:8]]).flatten(1).float() / 255
    assert torch.equal(data.images["train"], expected)


def test_an_array_too_big_for_memory_is_refused_in_one_line(tmp_path, monkeypatch):
    np.savez(tmp_path / "x.npz", train=colour_images(12, 8, 8))
    monkeypatch.setattr("pyro_vae.data.vae_data.available_bytes", lambda device: 1000)
    monkeypatch.setattr("pyro_vae.runtime.limits.available_bytes", lambda device: 1000)
    from pyro_vae.errors import ResourceError

    with pytest.raises(ResourceError, match="training images as float32 needs .*stream them"):
        VAEData(DataConfig("array", "none", val_size=2, root=str(tmp_path / "x.npz")))
