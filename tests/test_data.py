"""Datasets, binarization modes and splits, on the real files."""

import numpy as np
import pytest
import torch

from pyro_vae import DataConfig, VAEData
from pyro_vae.data.vae_data import bernoulli
from pyro_vae.errors import ConfigError, DataError


def test_splits_and_binarizations(data_dir):
    grey = VAEData(DataConfig("mnist", "none", val_size=5000), data_dir)
    assert grey.images["train"].shape == (55000, 784)
    assert grey.images["val"].shape == (5000, 784) and grey.images["test"].shape == (10000, 784)
    assert grey.labels["test"].shape == (10000,)
    assert 0 <= grey.images["test"].min() and grey.images["test"].max() <= 1
    assert len(grey.images["test"].unique()) > 2

    static = VAEData(DataConfig("mnist", "static"), data_dir, splits=("test",))
    assert torch.equal(static.images["test"], (grey.images["test"] > 0.5).float())


def test_dynamic_binarization_is_fresh_in_training_and_fixed_for_evaluation(data_dir):
    data = VAEData(DataConfig("mnist", "dynamic", val_size=100, train_limit=256), data_dir)
    assert len(data.images["train"].unique()) > 2, "training images stay grey; batches are sampled"
    epoch1 = torch.cat(list(data.train_batches(64, seed=1)))
    epoch1_again = torch.cat(list(data.train_batches(64, seed=1)))
    epoch2 = torch.cat(list(data.train_batches(64, seed=2)))
    assert set(epoch1.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(epoch1, epoch1_again)
    assert not torch.equal(epoch1, epoch2)
    # The test sample is the same in every load and binary.
    test_a = VAEData(DataConfig("mnist", "dynamic"), data_dir, splits=("test",)).observed("test")
    test_b = VAEData(DataConfig("mnist", "dynamic"), data_dir, splits=("test",)).observed("test")
    assert torch.equal(test_a, test_b) and set(test_a.unique().tolist()) == {0.0, 1.0}


def test_fast_bernoulli_draws_what_torch_bernoulli_draws():
    """The dynamic binarization's faster draw reproduces torch.bernoulli bit for bit (the reference run's numbers)."""
    p = torch.rand(300, 784)
    p[0, :5] = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5])
    fast, slow = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(3):  # and the generators stay in step
        assert torch.equal(bernoulli(p, fast), torch.bernoulli(p, generator=slow))
    double = p.double()
    assert torch.equal(bernoulli(double, fast), torch.bernoulli(double, generator=slow))


def test_fashion_mnist_loads(data_dir):
    data = VAEData(DataConfig("fashion-mnist", "none"), data_dir, splits=("test",))
    assert data.images["test"].shape == (10000, 784)


def test_missing_dataset_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no MNIST dataset under"):
        VAEData(DataConfig("mnist"), tmp_path, splits=("test",))


def _copy_raw(data_dir, tmp_path):
    """A torchvision root in ``tmp_path``: links to the real MNIST files, the test split's copied (to damage)."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for source in (data_dir / "MNIST" / "raw").glob("*-ubyte"):
        if source.name.startswith("t10k"):
            (raw / source.name).write_bytes(source.read_bytes())
        else:
            (raw / source.name).symlink_to(source.resolve())
    return raw


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[:1000], "1000 bytes where its header promises 7840016"),
        (lambda b: b + b"\x00", "7840017 bytes where its header promises 7840016"),
        (lambda b: b"\x00\x00\x0d\x03" + b[4:], "not an idx file of bytes"),
        (lambda b: b"", "not an idx file of bytes"),
    ],
)
def test_a_corrupt_idx_file_is_named(damage, message, data_dir, tmp_path):
    raw = _copy_raw(data_dir, tmp_path)
    images = raw / "t10k-images-idx3-ubyte"
    images.write_bytes(damage(images.read_bytes()))
    with pytest.raises(DataError, match=f"{images} is corrupt: {message}"):
        VAEData(DataConfig("mnist"), tmp_path, splits=("test",))


def test_images_and_labels_that_disagree_are_refused(data_dir, tmp_path):
    labels = _copy_raw(data_dir, tmp_path) / "t10k-labels-idx1-ubyte"
    body = labels.read_bytes()
    labels.write_bytes(body[:4] + (9000).to_bytes(4, "big") + body[8 : 8 + 9000])  # a whole file of 9000 labels
    with pytest.raises(DataError, match=r"inconsistent: \(10000, 28, 28\) images but 9000 labels"):
        VAEData(DataConfig("mnist"), tmp_path, splits=("test",))


def test_batches_from_a_step_on_are_the_tail_of_the_epoch(data_dir):
    data = VAEData(DataConfig("mnist", "dynamic", val_size=100, train_limit=640), data_dir)
    full = list(data.train_batches(64, seed=5))
    tail = list(data.train_batches(64, seed=5, skip=3))
    assert len(tail) == len(full) - 3 and all(torch.equal(a, b) for a, b in zip(full[3:], tail))


def test_the_default_validation_split_scales_with_the_data(tmp_path, data_dir):
    """A tenth of the training images, at most 5,000: MNIST keeps its 5,000, a 500-image set trains on 400."""
    mnist = VAEData(DataConfig("mnist", "dynamic"), data_dir, splits=("train", "val"))
    assert mnist.count("train") == 55000 and mnist.count("val") == 5000
    images = np.random.default_rng(0).integers(0, 256, (500, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "small.npz", train=images)
    small = VAEData(DataConfig("array", "dynamic", root=str(tmp_path / "small.npz")), splits=("train", "val", "test"))
    assert (small.count("train"), small.count("val"), small.count("test")) == (400, 50, 50)
    with pytest.raises(ConfigError, match="leave none to train on"):  # the control: the old fixed 5,000
        VAEData(DataConfig("array", "dynamic", val_size=5000, root=str(tmp_path / "small.npz")), splits=("train",))
