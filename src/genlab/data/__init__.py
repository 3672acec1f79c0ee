"""Datasets: IDX files, named image datasets, image folders, binarization. Never imports ``genlab.models``."""
from genlab.data.images import (BINARIZATIONS, DataSpec, ImageDataset, list_datasets, load_dataset)

__all__ = ["BINARIZATIONS", "DataSpec", "ImageDataset", "list_datasets", "load_dataset"]
