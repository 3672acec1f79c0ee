"""Datasets: IDX files, named image datasets, image folders, binarization, poem corpora. Never imports
``genlab.models``. ``DATASETS`` (``genlab.registry``) holds the named ones; ``catalog`` looks them up."""
from genlab.data.catalog import find_entry, list_datasets, load, load_dataset
from genlab.data.images import BINARIZATIONS, ImageDataset
from genlab.data.spec import DataConfig, Dataset, DatasetEntry, DataSpec
from genlab.data.text import TextDataset

__all__ = ["BINARIZATIONS", "DataConfig", "DataSpec", "Dataset", "DatasetEntry", "ImageDataset", "TextDataset",
           "find_entry", "list_datasets", "load", "load_dataset"]
