"""Datasets, binarization modes and splits, on the real files."""

import pytest
import torch

from pyro_vae import DataConfig, VAEData
from pyro_vae.errors import DataError


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


def test_fashion_mnist_loads(data_dir):
    data = VAEData(DataConfig("fashion-mnist", "none"), data_dir, splits=("test",))
    assert data.images["test"].shape == (10000, 784)


def test_missing_dataset_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no MNIST dataset under"):
        VAEData(DataConfig("mnist"), tmp_path, splits=("test",))
