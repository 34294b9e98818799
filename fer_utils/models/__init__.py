"""CNN registry (name -> backbone with a feature vector and a classification head) and runtime helpers.

Preprocessing and its presets live in the torch-free :mod:`fer_utils.options`. The fusion heads
(classifiers on CNN features + caption embeddings) are the package :mod:`fer_utils.models.heads`.
"""
from fer_utils.models.registry import (
    Classifier,
    ModelInfo,
    PretrainedWeights,
    create_model,
    imagenet_model,
    list_models,
    model_info,
    register_model,
    weights_path,
)

__all__ = ["Classifier", "ModelInfo", "PretrainedWeights", "create_model", "imagenet_model", "list_models", "model_info",
           "register_model", "weights_path"]
