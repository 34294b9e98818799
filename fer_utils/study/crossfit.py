"""Cross-fitted CNN outputs: the leakage-free input of a fusion head.

The original trained its fusion heads on features of a CNN fine-tuned on the *same* training
images: on those images the CNN's features are far more confident than on new ones, so a head
learns to trust the CNN more than it should (and it reused the CNN's validation split to pick the
head). Cross-fitting removes that: the training images are split into ``k`` folds, a CNN is trained
on ``k - 1`` of them and gives the held-out fold's outputs, so every training image's CNN input
comes from a model that never saw it; validation and test images get the mean of the ``k`` models'
outputs.

What is cross-fitted is the CNN's class **probabilities**, not its penultimate features: the
feature spaces of separately trained networks are not aligned (dimension 17 of one means nothing
in another), so out-of-fold features from ``k`` networks cannot be stacked into one input, while
class probabilities share their meaning across models. For a like-for-like comparison
:func:`crossfit_probabilities` also trains the **leaky** counterpart (the same recipe on all
training images, as the original did) and returns its probabilities.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from fer_utils.labels import NUM_CLASSES


@dataclasses.dataclass(frozen=True)
class CNNRecipe:
    """How the cross-fitted and leaky CNNs are trained (the same for both)."""

    model: str = "resnet18"
    image_size: int = 32
    epochs: int = 6
    batch_size: int = 32
    lr: float = 1e-3
    normalization: str = "imagenet"
    augmentation: str = "hflip"
    pretrained: bool = False


@dataclasses.dataclass
class CrossFit:
    oof: np.ndarray         # [N, 7] per index row: out-of-fold for train rows, fold mean elsewhere
    leaky: np.ndarray       # [N, 7] the same recipe trained on all training images
    folds: int
    recipe: CNNRecipe
    seconds: float


def _train(recipe: CNNRecipe, index: pd.DataFrame, seed: int):
    """A CNN of ``recipe`` trained on ``index``'s train rows, selected on its val rows."""
    from fer_utils.data.transforms import make_datasets
    from fer_utils.models import create_model
    from fer_utils.options import Preprocessing
    from fer_utils.training.repro import seed_everything
    from fer_utils.training.train import TrainConfig, fit

    seed_everything(seed)
    prep = Preprocessing.preset(recipe.image_size, recipe.normalization)
    sets = make_datasets(index, prep, recipe.augmentation)
    model = create_model(recipe.model, pretrained=recipe.pretrained)
    fit(model, sets["train"], sets["val"], TrainConfig(batch_size=recipe.batch_size, lr=recipe.lr,
                                                        epochs=recipe.epochs, patience=recipe.epochs, seed=seed,
                                                        device="cpu", amp=False), progress=False)
    return model, prep


def _proba_all(model, prep, index: pd.DataFrame) -> np.ndarray:
    """The model's probabilities for every row of ``index``, in order (plain eval transform)."""
    from fer_utils.data.dataset import FERDataset
    from fer_utils.data.tensor_transforms import eval_transform
    from fer_utils.training.evaluate import predict_proba

    dataset = FERDataset(index, batch_transform=eval_transform(prep), store_size=prep.image_size)
    return predict_proba(model, dataset, batch_size=64, device="cpu", num_workers=0)


def crossfit_probabilities(index: pd.DataFrame, recipe: CNNRecipe = CNNRecipe(), folds: int = 3,
                           seed: int = 0) -> CrossFit:
    """Out-of-fold and leaky class probabilities of every row of ``index`` (see the module docstring)."""
    import time

    from sklearn.model_selection import StratifiedKFold

    if folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {folds}")
    start = time.perf_counter()
    index = index.reset_index(drop=True)
    train = np.flatnonzero((index["split"] == "train").to_numpy())
    others = np.flatnonzero((index["split"] != "train").to_numpy())
    val = index[index["split"] == "val"]
    labels = index["label"].to_numpy()[train]
    oof = np.zeros((len(index), NUM_CLASSES), dtype=np.float32)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (fit_rows, held_rows) in enumerate(splitter.split(train, labels)):
        model, prep = _train(recipe, pd.concat([index.iloc[train[fit_rows]], val]), seed + fold)
        held = train[held_rows]
        proba = _proba_all(model, prep, index.iloc[np.concatenate([held, others])])
        oof[held] = proba[:len(held)]
        oof[others] += proba[len(held):] / folds
    model, prep = _train(recipe, index[index["split"].isin(["train", "val"])], seed + folds)
    leaky = _proba_all(model, prep, index)
    return CrossFit(oof, leaky, folds, recipe, time.perf_counter() - start)


__all__ = ["CNNRecipe", "CrossFit", "crossfit_probabilities"]
