"""Strict, flat configs built from notebook parameters (nanoGPT style).

Each parameterised notebook has a config dataclass here, registered under the notebook's stem.
``from_params`` rejects an unknown key or a value of the wrong type with a :class:`ConfigError`
naming the key, so a typo in a papermill parameter is an error rather than a silent new variable.
The study runner checks manifest parameters against the same dataclass before executing.

Types are checked by pydantic's strict mode; the choices and minimums of each field here. This
module imports only torch-free leaves (:mod:`~fer_utils.options`), so validating a manifest never
loads torch.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, ClassVar, Literal

from fer_utils.errors import ConfigError
from fer_utils.options import (
    AUGMENTATION_SETTINGS, AUGMENTATIONS, CAPTIONERS, CLASS_WEIGHTS, CNN_ARCHITECTURES, COMPILE_MODES, DATA_FORMATS,
    FUSION_NORMS, IMBALANCE_TREATMENTS, LOSSES, MONITORS, NORMALIZATIONS, OPTIMIZERS, RAFDB_VARIANTS, SAMPLERS,
    TEXT_ENCODERS,
)

NOTEBOOK_CONFIGS: dict[str, type["NotebookConfig"]] = {}


def register(stem: str):
    """Class decorator: the config of notebook ``notebooks/<stem>.ipynb``."""
    def wrap(cls):
        cls.notebook = stem
        NOTEBOOK_CONFIGS[stem] = cls
        return cls
    return wrap


def _describe(annotation: Any) -> str:
    """An annotation as an error message names it: ``int``, ``None``, ``'auto'``, ``float or None``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(map(_describe, typing.get_args(annotation)))
    if origin is Literal:
        return " or ".join(map(repr, typing.get_args(annotation)))
    return "None" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


@functools.cache
def _validator(annotation: Any):
    """pydantic's strict validator of one annotation (bool, int, float, str, None, Any, ``list[...]``,
    unions and ``Literal[...]``: no coercion, except an int where a float is expected)."""
    from pydantic import ConfigDict, TypeAdapter

    return TypeAdapter(annotation, config=ConfigDict(strict=True))


def _check_type(key: str, value: Any, annotation: Any) -> Any:
    """``value`` as ``annotation`` accepts it (ints widened to float where a float is expected), or a
    :class:`ConfigError` naming the parameter (or the list item) and the value."""
    from pydantic import ValidationError

    try:
        return _validator(annotation).validate_python(value)
    except ValidationError as exc:
        position = next((p for p in exc.errors()[0]["loc"] if isinstance(p, int)), None)
        if position is not None and typing.get_origin(annotation) is list:   # one item of a list
            key, value, annotation = f"{key}[{position}]", value[position], typing.get_args(annotation)[0]
        raise ConfigError(f"parameter {key!r} must be {_describe(annotation)}, got {type(value).__name__} "
                          f"{value!r}") from None


@dataclasses.dataclass(frozen=True)
class NotebookConfig:
    """Base of notebook configs; fields are flat literals with defaults.

    ``choices`` lists the allowed values of a field; ``minimums`` the least value of a numeric one
    (a value of another type, such as the "auto" of ``int | Literal["auto"]``, is not compared).
    Both apply to each element of a list field.
    """

    notebook: ClassVar[str] = ""
    choices: ClassVar[dict[str, tuple]] = {}
    minimums: ClassVar[dict[str, float]] = {}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_params(cls, params: dict[str, Any], *, partial: bool = False, where: str = ""):
        """Validate ``params``; unknown keys, wrong types and invalid choices raise ConfigError.

        With ``partial=True`` only the given keys are checked (manifest overrides) and the
        validated dict is returned instead of a config object.
        """
        where = where or f"notebook {cls.notebook!r}"
        hints = typing.get_type_hints(cls)
        names = cls.field_names()
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise ConfigError(f"{where}: unknown parameter(s) {', '.join(unknown)}; "
                              f"known: {', '.join(names)}")
        checked = {}
        for key, value in params.items():
            try:
                checked[key] = _check_type(key, value, hints[key])
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            is_list = isinstance(checked[key], list)
            items = checked[key] if is_list else [checked[key]]
            allowed, low = cls.choices.get(key), cls.minimums.get(key)
            for item in items:
                got = f"; got {item!r} in {value!r}" if is_list else f"; got {value!r}"
                if allowed is not None and item not in allowed:
                    raise ConfigError(f"{where}: parameter {key!r} must be one of {', '.join(map(str, allowed))}{got}")
                if (low is not None and isinstance(item, (int, float)) and not isinstance(item, bool)
                        and item < low):
                    raise ConfigError(f"{where}: parameter {key!r} must be >= {low}{got}")
        if partial:
            return checked
        return cls(**checked)

    @classmethod
    def from_namespace(cls, namespace: dict[str, Any]):
        """Build from a notebook's globals: takes exactly the config's fields (all must exist)."""
        missing = [n for n in cls.field_names() if n not in namespace]
        if missing:
            raise ConfigError(f"notebook {cls.notebook!r}: parameters cell lacks {', '.join(missing)}")
        return cls.from_params({n: namespace[n] for n in cls.field_names()})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def config_for(stem: str) -> type[NotebookConfig]:
    try:
        return NOTEBOOK_CONFIGS[stem]
    except KeyError:
        raise ConfigError(f"no config registered for notebook {stem!r}; "
                          f"known: {', '.join(sorted(NOTEBOOK_CONFIGS))}") from None


@dataclasses.dataclass(frozen=True)
class DataConfig(NotebookConfig):
    """The data parameters every data-reading notebook shares (see ``experiment.load_data``)."""

    data_path: str = "data/synthetic"
    data_format: str = "auto"
    variant: str = "aligned"
    val_fraction: float | None = 0.2   # None keeps the data set's own validation split (FER2013)
    subset: float = 1.0
    seed: int = 42

    choices: ClassVar[dict[str, tuple]] = {"data_format": ("auto", *DATA_FORMATS), "variant": RAFDB_VARIANTS}


@register("01_data")
@dataclasses.dataclass(frozen=True)
class DataOverviewConfig(DataConfig):
    samples_per_class: int = 6
    run_dir: str = "data/runs/01_data/default"


@dataclasses.dataclass(frozen=True)
class CNNRecipeConfig(DataConfig):
    """How a CNN is trained (the parameters of ``experiment.train_cnn`` but the augmentation): shared
    by the CNN baselines and the augmentation study."""

    model: str = "densenet121"
    pretrained: bool = False
    image_size: int = 224
    normalization: str = "half"        # "half": mean = std = 0.5 as the original; "imagenet"
    class_weights: str = "none"        # none | inverse | effective (fer_utils.data.weights)
    class_weight_beta: float = 0.999   # the effective number's beta, in (0, 1)
    loss: str = "cross_entropy"        # cross_entropy | focal (the class weights as its alpha)
    focal_gamma: float = 2.0           # focal: 0 is the cross-entropy
    sampler: str = "none"              # none (shuffled) | balanced (every class equally likely)
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"            # adam (the original) | adamw | sgd (momentum 0.9)
    lr: float = 1e-3
    warmup_epochs: float = 0.0         # > 0: lr rises linearly from 1 % over that many epochs
    patience: int = 5
    monitor: str = "val_macro_f1"
    restore_best: bool = True          # False keeps the last epoch's weights, as the original did
    device: str = "auto"
    # DataLoader workers. "auto" (the full profile; runtime.default_num_workers): up to 8 on CUDA,
    # where 0 halves training speed, and on a CPU only the cores torch's threads leave free; the
    # default 0 keeps CPU results the same on every machine.
    num_workers: int | Literal["auto"] = 0
    channels_last: bool = True         # faster on CPU (1.25-1.35x) and GPU; same results
    torch_compile: str = "none"        # none | default | reduce-overhead (CUDA graphs) | max-autotune
    n_bootstrap: int = 1000
    # the decoded images (uint8, source size) are kept and memory-mapped there, keyed by content:
    # later runs on the same data skip decoding ("": decoded into memory, nothing kept)
    cache_dir: str = "data/cache"

    choices: ClassVar[dict[str, tuple]] = {
        **DataConfig.choices,
        "model": CNN_ARCHITECTURES, "class_weights": CLASS_WEIGHTS, "loss": LOSSES, "sampler": SAMPLERS,
        "normalization": tuple(NORMALIZATIONS), "monitor": tuple(MONITORS), "optimizer": OPTIMIZERS,
        "torch_compile": COMPILE_MODES,
    }
    minimums: ClassVar[dict[str, float]] = {"num_workers": 0, "warmup_epochs": 0, "focal_gamma": 0,
                                            "class_weight_beta": 0}


@register("02_cnn_baselines")
@dataclasses.dataclass(frozen=True)
class CNNBaselineConfig(CNNRecipeConfig):
    """One CNN trained on the training split, selected on validation, tested once."""

    augmentation: str = "none"
    rrc_scale_min: float = 0.8
    save_bundle: bool = True
    run_dir: str = "data/runs/02_cnn_baselines/default"

    choices: ClassVar[dict[str, tuple]] = {**CNNRecipeConfig.choices, "augmentation": AUGMENTATIONS}


@register("07_augmentation")
@dataclasses.dataclass(frozen=True)
class AugmentationConfig(CNNRecipeConfig):
    """One CNN recipe trained under every augmentation setting and seed, each compared with no
    augmentation on the same test images (fer_utils.study.ablation_study). ``seed`` makes the split;
    ``seeds`` are the training seeds. The defaults are the full study's grid."""

    model: str = "resnet18"
    normalization: str = "imagenet"
    settings: list[str] = dataclasses.field(default_factory=lambda: list(AUGMENTATION_SETTINGS))
    rotate_degrees: float = 15.0       # hflip_rotate and minority: RandomRotation(+-rotate_degrees)
    seeds: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 3])
    run_dir: str = "data/runs/07_augmentation/default"

    choices: ClassVar[dict[str, tuple]] = {**CNNRecipeConfig.choices, "settings": tuple(AUGMENTATION_SETTINGS)}
    minimums: ClassVar[dict[str, float]] = {**CNNRecipeConfig.minimums, "rotate_degrees": 0, "seeds": 0,
                                            "epochs": 1, "batch_size": 1, "patience": 1, "n_bootstrap": 1}


@register("08_class_weights")
@dataclasses.dataclass(frozen=True)
class ClassImbalanceConfig(NotebookConfig):
    """Class-imbalance treatments (class weights, focal loss, a class-balanced sampler) on the
    fusion study's inputs: a head on the frozen CNN features and the fusion study's best head on
    fused features (cached arrays), and with ``train_cnn`` the CNN itself trained under each
    (fer_utils.study.ablation_study). The split, the caption settings, the heads' training budget and the
    CNN recipe are the fusion run's (``fusion_run``) and its CNN bundle's. The defaults are the full
    study's grid."""

    data_path: str = "data/synthetic"  # the fusion run's data set (checked by fingerprint)
    fusion_run: str = "default"        # the run of 06_fusion whose inputs and best head are used
    treatments: list[str] = dataclasses.field(default_factory=lambda: list(IMBALANCE_TREATMENTS))
    class_weight_betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.99, 0.999, 0.9999])
    focal_gamma: float = 2.0
    cnn_head: str = ""                 # the head on CNN features; "": the fused side's head (mlp1 if it needs both)
    train_cnn: bool = True             # also train the CNN (its bundle's recipe) under each treatment
    seeds: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 3])
    device: str = "auto"
    n_bootstrap: int = 1000
    seed: int = 0                      # seeds the bootstrap resampling
    runs_root: str = "data/runs"
    cache_dir: str = "data/cache"
    run_dir: str = "data/runs/08_class_weights/default"

    choices: ClassVar[dict[str, tuple]] = {"treatments": IMBALANCE_TREATMENTS}
    minimums: ClassVar[dict[str, float]] = {"class_weight_betas": 0, "focal_gamma": 0, "seeds": 0, "n_bootstrap": 1}


@register("03_cnn_compare")
@dataclasses.dataclass(frozen=True)
class CNNCompareConfig(NotebookConfig):
    """Compare the CNN baselines' run records (never re-trains)."""

    runs_root: str = "data/runs"
    source_notebook: str = "02_cnn_baselines"
    n_bootstrap: int = 1000
    seed: int = 0
    run_dir: str = "data/runs/03_cnn_compare/default"


@dataclasses.dataclass(frozen=True)
class CaptionConfig(DataConfig):
    """The parameters that say which captions and which text features: captioner, prompt,
    generation settings, post-processing, text encoder (shared by the prompt and fusion notebooks)."""

    captioner: str = "blip2"                        # the original's (model_id); tiny_blip2: random weights
    model_id: str = "Salesforce/blip2-flan-t5-xl"   # captioner blip2: a hub id or a local folder
    revision: str = ""                              # "" = the snapshot in the Hugging Face cache
    captions_file: str = ""                         # captioner precomputed: CSV or JSONL (id, caption)
    simulated_accuracy: float = 0.8                 # captioner simulated: share of true captions
    prompt: str = "original"                        # a name of fer_utils.vlm.prompts.PROMPTS or the text
    max_new_tokens: int = 30
    min_new_tokens: int = 0
    num_beams: int = 1
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    caption_batch_size: int = 64
    dtype: str = "auto"                             # auto: bfloat16 on CUDA, float32 on CPU
    postprocess: bool = True
    text_encoder: str = "clip"                      # the original's: CLIPTextModel pooler_output
    text_model_id: str = ""                         # "" = the encoder's default model
    device: str = "auto"
    cache_dir: str = "data/cache"

    choices: ClassVar[dict[str, tuple]] = {
        **DataConfig.choices, "captioner": CAPTIONERS, "text_encoder": TEXT_ENCODERS,
        "dtype": ("auto", "float32", "bfloat16", "float16"),
    }
    minimums: ClassVar[dict[str, float]] = {
        "simulated_accuracy": 0, "max_new_tokens": 1, "min_new_tokens": 0, "num_beams": 1,
        "no_repeat_ngram_size": 0, "caption_batch_size": 1,
    }


@register("04_vlm_prompts")
@dataclasses.dataclass(frozen=True)
class VLMPromptsConfig(CaptionConfig):
    """One captioner + prompt + text encoder: captions of every image, their emotion votes, and a
    text-only linear probe on their embeddings (selected on validation, tested once)."""

    probe_cs: list[float] = dataclasses.field(default_factory=lambda: [0.1, 1.0, 10.0, 100.0])
    examples_per_class: int = 2
    n_bootstrap: int = 1000
    run_dir: str = "data/runs/04_vlm_prompts/default"

    minimums: ClassVar[dict[str, float]] = {**CaptionConfig.minimums, "examples_per_class": 0, "n_bootstrap": 0}


@register("05_vlm_compare")
@dataclasses.dataclass(frozen=True)
class VLMCompareConfig(NotebookConfig):
    """Compare the prompt-ablation runs' records (never captions anything)."""

    runs_root: str = "data/runs"
    source_notebook: str = "04_vlm_prompts"
    run_dir: str = "data/runs/05_vlm_compare/default"


@register("06_fusion")
@dataclasses.dataclass(frozen=True)
class FusionConfig(CaptionConfig):
    """Fusion heads on CNN features + caption embeddings, each against the same head on CNN-only
    and text-only inputs, with controls and an informativeness sweep (fer_utils.study.fusion_study)."""

    cnn_bundle: str = ""                 # "": the validation-best CNN bundle trained on this data set
    heads: list[str] = dataclasses.field(default_factory=lambda: [
        "mlp1", "mlp2", "mlp3", "mlp1_bn", "mlp1_leaky", "original_attention", "original_self_attention",
        "original_cross_attention", "token_attention", "gated"])
    inputs: list[str] = dataclasses.field(default_factory=lambda: ["cnn", "text", "fused"])
    fusion_norm: str = "concat_l2"       # the original's: concatenate, then L2-normalise each image
    late_fusion: bool = True             # CNN-only + text-only probabilities, and CNN + the VLM vote
    controls: list[str] = dataclasses.field(default_factory=lambda: ["shuffled", "constant"])
    second_encoder: str = ""             # "open_clip": the controls gain a CLIP *image* embedding in place
                                         # of the caption's (captions vs a second pretrained encoder)
    sweep_accuracies: list[float] = dataclasses.field(default_factory=lambda: [0.143, 0.3, 0.5, 0.7, 0.9])
    seeds: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 3, 4, 5])
    # Leakage: CNN class probabilities cross-fitted over k folds of the training images against the
    # same recipe trained on all of them (the original's way); 0 folds: skipped (fer_utils.study.crossfit)
    crossfit_folds: int = 3
    crossfit_model: str = "resnet18"
    crossfit_image_size: int = 224
    crossfit_epochs: int = 30
    crossfit_pretrained: bool = True
    leakage_accuracy: float = 0.5        # simulated captions fused in the leakage comparison too
    frozen_backbone: str = ""            # e.g. densenet121: its ImageNet weights, frozen, as a leakage-free
                                         # CNN input too (needs the pretrained weights: the full profile)
    # The faithful row: a CNN baseline run of the original's protocol (its bundle) and the
    # original's head training (half data, 10 % validation, val accuracy, last epoch); "" = skip
    original_cnn_run: str = ""
    epochs: int = 50                     # the original's heads: Adam 1e-3, batch 64, up to 50 epochs,
    batch_size: int = 64                 # early stopping with patience 5
    lr: float = 1e-3
    patience: int = 5
    monitor: str = "val_macro_f1"
    n_bootstrap: int = 1000
    save_bundle: bool = True             # the validation-best servable fused model, in <run_dir>/bundle
    runs_root: str = "data/runs"
    run_dir: str = "data/runs/06_fusion/default"

    choices: ClassVar[dict[str, tuple]] = {**CaptionConfig.choices, "fusion_norm": FUSION_NORMS,
                                           "monitor": tuple(MONITORS), "crossfit_model": CNN_ARCHITECTURES,
                                           "second_encoder": ("", "open_clip", "tiny_open_clip"),
                                           "frozen_backbone": ("", *CNN_ARCHITECTURES)}
    minimums: ClassVar[dict[str, float]] = {**CaptionConfig.minimums, "epochs": 1, "batch_size": 1, "patience": 1,
                                            "n_bootstrap": 1, "crossfit_folds": 0, "crossfit_image_size": 32,
                                            "crossfit_epochs": 1, "leakage_accuracy": 0}
