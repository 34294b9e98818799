"""Data sets of the study: loading, checking, splitting, decoding and fingerprinting (torch-free),
and turning them into tensors (the modules that need torch).

Every loader returns the same index (a DataFrame with the columns :data:`INDEX_COLUMNS`, see
:mod:`fer_utils.data.index`); everything downstream works on that index::

    from fer_utils.data.transforms import make_datasets
    from fer_utils.data.weights import class_weights

    index = make_splits(load_dataset("data/rafdb"), val_fraction=0.2, seed=42)
    datasets = make_datasets(index, Preprocessing.preset(100, "half"), augmentation="hflip", cache_dir="data/cache")
    weights = class_weights(datasets["train"].labels, "inverse")

Importing this package does not import torch: the names below are the torch-free ones. What needs
torch is imported from its module: :mod:`~fer_utils.data.dataset` (``FERDataset``),
:mod:`~fer_utils.data.tensor_transforms` (``BatchTransform``, ``eval_transform``, ``image_transform``),
:mod:`~fer_utils.data.transforms` (``make_datasets``, ``build_batch_transforms``, ``minority_classes``)
and :mod:`~fer_utils.data.weights` (``class_weights``).
"""
from fer_utils.data.checks import CheckReport, check_dataset
from fer_utils.data.decoded import decoded_images
from fer_utils.data.fer2013 import load_fer2013
from fer_utils.data.fingerprint import file_sha256, fingerprint
from fer_utils.data.imagefolder import load_imagefolder
from fer_utils.data.index import IMAGE_EXTENSIONS, INDEX_COLUMNS, SPLITS, class_counts, open_image
from fer_utils.data.loaders import FORMATS, describe_dataset, detect_format, load_dataset
from fer_utils.data.rafdb import load_rafdb
from fer_utils.data.splits import make_splits, split_counts

__all__ = [
    "FORMATS", "IMAGE_EXTENSIONS", "INDEX_COLUMNS", "SPLITS", "CheckReport",
    "check_dataset", "class_counts", "decoded_images", "describe_dataset", "detect_format", "file_sha256",
    "fingerprint", "load_dataset", "load_fer2013", "load_imagefolder", "load_rafdb", "make_splits", "open_image",
    "split_counts",
]
