"""CNN registry (name -> backbone with a feature vector and a classification head) and runtime helpers."""
from fer_utils.models.registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ORIGINAL_STUDY_PREPROCESSING,
    Classifier,
    ModelInfo,
    Preprocessing,
    create_model,
    list_models,
    model_info,
    register_model,
    weights_path,
)

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "ORIGINAL_STUDY_PREPROCESSING", "Classifier", "ModelInfo",
    "Preprocessing", "create_model", "list_models", "model_info", "register_model", "weights_path",
]
