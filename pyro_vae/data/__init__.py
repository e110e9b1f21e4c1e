"""The images a run trains on: MNIST and Fashion-MNIST, binarized three ways, split into train/val/test."""

from .mnist import BINARIZATIONS, CLASS_NAMES, DATASETS, DataConfig, VAEData

__all__ = ["BINARIZATIONS", "CLASS_NAMES", "DATASETS", "DataConfig", "VAEData"]
