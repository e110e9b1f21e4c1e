"""The images a run trains on: torchvision's sets, a folder of images or an array (:mod:`.sources`), made one
size (:mod:`.images`), binarized three ways and split into train/val/test (:mod:`.vae_data`)."""

from .sources import CLASS_NAMES, DATASETS
from .vae_data import BINARIZATIONS, DataConfig, VAEData

__all__ = ["BINARIZATIONS", "CLASS_NAMES", "DATASETS", "DataConfig", "VAEData"]
