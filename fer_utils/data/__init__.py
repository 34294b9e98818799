"""Data sets of the study: loading, checking, splitting, transforming and fingerprinting.

Every loader returns the same index (a DataFrame with the columns :data:`INDEX_COLUMNS`, see
:mod:`fer_utils.data.index`); everything downstream works on that index::

    index = make_splits(load_dataset("data/rafdb"), val_fraction=0.2, seed=42)
    datasets = make_datasets(index, Preprocessing.preset(100, "half"), augmentation="hflip", cache_dir="data/cache")
    weights = class_weights(datasets["train"].labels, "inverse")
"""
from fer_utils.data.checks import CheckReport, check_dataset
from fer_utils.data.dataset import FERDataset
from fer_utils.data.decoded import decoded_images
from fer_utils.data.fer2013 import load_fer2013
from fer_utils.data.fingerprint import file_sha256, fingerprint
from fer_utils.data.imagefolder import load_imagefolder
from fer_utils.data.index import IMAGE_EXTENSIONS, INDEX_COLUMNS, SPLITS, class_counts, open_image
from fer_utils.data.loaders import FORMATS, describe_dataset, detect_format, load_dataset
from fer_utils.data.rafdb import load_rafdb
from fer_utils.data.splits import make_splits, split_counts
from fer_utils.data.tensor_transforms import BatchTransform, ImageTransform, eval_transform, image_transform
from fer_utils.data.transforms import (
    build_batch_transforms,
    make_datasets,
    minority_classes,
)
from fer_utils.data.weights import class_weights

__all__ = [
    "FORMATS", "IMAGE_EXTENSIONS", "INDEX_COLUMNS", "SPLITS",
    "BatchTransform", "CheckReport", "FERDataset", "ImageTransform",
    "build_batch_transforms", "check_dataset", "class_counts", "class_weights",
    "decoded_images", "eval_transform", "image_transform",
    "describe_dataset", "detect_format", "file_sha256", "fingerprint", "load_dataset", "load_fer2013", "load_imagefolder",
    "load_rafdb", "make_datasets", "make_splits", "minority_classes", "open_image", "split_counts",
]
