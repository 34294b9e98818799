"""BLIP-2 captions through transformers, and a tiny BLIP-2 built entirely in code.

:class:`Blip2Captioner` wraps a transformers ``Blip2ForConditionalGeneration`` and its
``Blip2Processor``: it captions faces in batches with greedy decoding as
:class:`~fer_utils.vlm.base.GenerationSettings` say. The original study used
``Salesforce/blip2-flan-t5-xl`` (:data:`ORIGINAL_MODEL_ID`, a flan-t5 *encoder-decoder* language
model); ``Salesforce/blip2-opt-2.7b`` (an OPT *decoder-only* one) works too. The two differ in
what ``generate`` returns (transformers 5.24): for OPT the output rows start with the prompt's ids
(image tokens, BOS, prompt) followed by the new tokens; for flan-t5 they start with the decoder
start token (``<pad>``) followed by the new tokens, the prompt having gone to the encoder.
:meth:`Blip2Captioner.generate_token_ids` cuts both down to the new tokens, so a caption never
repeats the prompt.

Weights are never downloaded at run time: :meth:`Blip2Captioner.from_pretrained` reads the
Hugging Face cache (or a local folder) only and raises :class:`~fer_utils.errors.WeightsNotFoundError`,
with the one command that downloads them, when they are missing. Random weights are never used
in place of missing ones.

:func:`tiny_blip2` builds a BLIP-2 of a few hundred thousand parameters through the same
transformers classes (byte-level BPE tokenizer trained in code, 2-layer vision tower, Q-Former
and OPT or T5 language model) with random weights from a seed, so the real code paths
(processor, batched ``generate``, ``save_pretrained``/``from_pretrained``) are tested offline in
seconds. Its captions carry no meaning (:func:`tiny_blip2_captioner` marks it
``meaningful = False``). :func:`original_architecture_config` writes down the exact architecture
of ``Salesforce/blip2-flan-t5-xl`` for speed measurements with random weights
(``benchmarks/bench_captions.py``).

Importing this module does not import torch or transformers; building a model does.
"""
from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fer_utils.cache import file_sha256
from fer_utils.errors import ConfigError, WeightsNotFoundError
from fer_utils.vlm.base import Captioner, FaceImage, GenerationSettings, hf_download_command, quiet_loading

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor

ORIGINAL_MODEL_ID = "Salesforce/blip2-flan-t5-xl"
"""The captioner of the original study (flan-t5-xl language model, encoder-decoder)."""

OPT_MODEL_ID = "Salesforce/blip2-opt-2.7b"
"""The other supported BLIP-2 kind (OPT-2.7b language model, decoder-only)."""

TINY_KINDS: tuple[str, ...] = ("opt", "t5")
"""Language-model kinds of :func:`tiny_blip2`: decoder-only OPT or encoder-decoder T5."""

ATTN_IMPLEMENTATIONS: tuple[str, ...] = ("eager", "sdpa", "flash_attention_2", "flex_attention")
"""Attention implementations a caller may ask for; :func:`check_attn_implementation` says which
ones BLIP-2 with a given language model supports in the installed transformers."""

WEIGHT_SUFFIXES: tuple[str, ...] = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")

TINY_WEIGHT_STD = 0.2
"""Standard deviation of :func:`tiny_blip2`'s random weight matrices."""

_TINY_IDENTITY_VERSION = 1  # bump when tiny_blip2 builds other weights/tokenizer for the same seed

# A small fixed corpus for the tiny byte-level BPE: the study's prompts, the seven emotions and
# everyday caption words, so that merges form whole emotion words. Changing it changes the tiny
# tokenizer (bump _TINY_IDENTITY_VERSION).
TINY_CORPUS: tuple[str, ...] = (
    "Question: What emotion is the person showing in the image? Answer:",
    "Question: What is the facial expression of this person? Answer:",
    "Question: How does the person in the picture feel? Answer:",
    "Question: Describe the person's eyebrows, eyes and mouth in the image. Answer:",
    "Question: In one word, what emotion is the person showing in the image? Answer:",
    "Describe the face in the photo.",
    "a photo of a face",
    "a close up photo of a person's face",
    "the person is happy and smiling",
    "the person looks sad and is crying",
    "the man is angry and frowning",
    "the woman is surprised with her mouth open",
    "the child looks fearful and scared",
    "the person is disgusted by the smell",
    "the face is neutral and calm",
    "happy sad angry surprised fearful disgusted neutral",
    "happiness sadness anger surprise fear disgust neutral contempt",
    "emotion emotions expression expressions feeling feelings",
    "she is smiling, he is laughing, they are happy",
    "a young woman with a big smile",
    "an old man with a frown on his face",
    "a boy with wide eyes and raised eyebrows",
    "a girl with tears in her eyes",
    "a person wrinkling the nose in disgust",
    "the picture shows a face with no clear emotion",
    "the person in the image is showing happiness",
    "the person in the image is showing sadness",
    "the person in the image is showing anger",
    "the person in the image is showing surprise",
    "the person in the image is showing fear",
    "the person in the image is showing disgust",
)


# --- small helpers -----------------------------------------------------------------------------

def resolve_dtype(dtype: str, device: "torch.device") -> "torch.dtype":
    """``"auto"``: bfloat16 on CUDA (float16 where bfloat16 is unsupported), float32 on CPU; else the named dtype."""
    import torch

    from fer_utils.models.runtime import amp_dtype

    if dtype == "auto":
        return amp_dtype(device) if device.type == "cuda" else torch.float32
    named = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in named:
        raise ConfigError(f"dtype must be one of auto, {', '.join(named)}; got {dtype!r}")
    return named[dtype]


def check_attn_implementation(attn_implementation: str, text_model_type: str) -> None:
    """Raise :class:`ConfigError` unless BLIP-2 with a ``text_model_type`` language model
    (``"t5"``, ``"opt"``) supports ``attn_implementation`` in the installed transformers.

    The flags checked are the model classes' own (``_supports_sdpa``, ``_supports_flash_attn``,
    ``_supports_flex_attn``); in transformers 5.24, BLIP-2 supports eager, sdpa (its default)
    and flex attention (OPT only: with T5 generation fails), and not FlashAttention-2 (its
    Q-Former runs in float32).
    """
    from transformers import Blip2ForConditionalGeneration, OPTForCausalLM, T5ForConditionalGeneration

    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ConfigError(f"attn_implementation must be one of {', '.join(ATTN_IMPLEMENTATIONS)}, "
                          f"got {attn_implementation!r}")
    if attn_implementation == "eager":
        return
    text_classes = {"t5": T5ForConditionalGeneration, "opt": OPTForCausalLM}
    flag = {"sdpa": "_supports_sdpa", "flash_attention_2": "_supports_flash_attn",
            "flex_attention": "_supports_flex_attn"}[attn_implementation]
    classes = [Blip2ForConditionalGeneration]
    if text_model_type in text_classes:
        classes.append(text_classes[text_model_type])
    if attn_implementation == "flex_attention" and text_model_type == "t5":
        # T5ForConditionalGeneration claims flex support, but BLIP-2 + T5 generation fails inside the
        # compiled flex kernel (index out of bounds, transformers 5.24 / torch 2.14, measured on CPU)
        raise ConfigError("attn_implementation='flex_attention' does not work for BLIP-2 with a T5 language model "
                          "in transformers 5.24 (generation fails in the flex kernel); use 'sdpa' or 'eager'")
    for cls in classes:
        if not getattr(cls, flag, False):
            raise ConfigError(f"attn_implementation={attn_implementation!r} is not supported by {cls.__name__} "
                              f"in this transformers version ({flag} is False); use 'sdpa' or 'eager'")


def _weights_not_found(model_id: str, revision: str | None, why: str) -> WeightsNotFoundError:
    from huggingface_hub import constants

    at = f" at revision {revision!r}" if revision else ""
    return WeightsNotFoundError(
        f"BLIP-2 model {model_id!r}{at}: {why}. Weights are read from the local Hugging Face cache only "
        f"(HF_HOME={constants.HF_HOME}, hub cache {constants.HF_HUB_CACHE}) and are never downloaded at run time; "
        f"random weights are never used silently in their place. Download them once with:  "
        f"{hf_download_command(model_id, revision)}  (with the same HF_HOME), or pass a local folder made by "
        f"save_pretrained.")


def folder_sha256(folder: str | os.PathLike) -> str:
    """sha256 over every file of a model folder (relative path and :func:`~fer_utils.cache.file_sha256`
    of each, sorted): the weights, and the config, tokenizer and generation files that also decide the
    captions. Hidden files and folders (``.cache``, ``.git``) are skipped."""
    root = Path(folder)
    digest = hashlib.sha256()
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not any(p.name.endswith(WEIGHT_SUFFIXES) for p in files):
        raise WeightsNotFoundError(f"{root}: model folder has no weight file ({', '.join(WEIGHT_SUFFIXES)})")
    for path in files:
        digest.update(f"{path.relative_to(root).as_posix()}|{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def _keep_in_fp32_names(model: "Blip2ForConditionalGeneration", dtype: "torch.dtype") -> list[str]:
    """Module name parts transformers keeps in float32 when it loads ``model`` in ``dtype``
    (``qformer`` and ``query_tokens`` of BLIP-2 and ``wo`` of T5, for float16 only)."""
    plan = model._get_dtype_plan(dtype)  # transformers' own rule, as from_pretrained(dtype=...) applies it
    return sorted(plan)


def cast_model(model: "Blip2ForConditionalGeneration", dtype: "torch.dtype") -> None:
    """Cast ``model``'s floating-point parameters and buffers in place to ``dtype`` the way
    ``from_pretrained(dtype=...)`` loads them: the modules transformers keeps in float32 for float16
    (the Q-Former, the query tokens and T5's ``wo`` projections, which overflow in float16) are
    left in float32, untouched (never rounded through float16)."""
    import torch

    keep = set(_keep_in_fp32_names(model, dtype))
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if not tensor.is_floating_point():
            continue
        target = torch.float32 if keep & set(name.split(".")) else dtype
        if tensor.dtype != target:
            tensor.data = tensor.data.to(target)


def _image_token(processor: "Blip2Processor") -> str:
    """The text of the processor's image token (an ``AddedToken`` when made in code, a str when loaded)."""
    token = processor.image_token
    return str(getattr(token, "content", token))


def _model_dtype(model: "Blip2ForConditionalGeneration") -> "torch.dtype":
    """The dtype the language model computes in (its input embeddings'), which ``generate`` feeds."""
    return model.get_input_embeddings().weight.dtype


# --- the captioner -----------------------------------------------------------------------------

class Blip2Captioner(Captioner):
    """Captions with a transformers BLIP-2 (``Blip2ForConditionalGeneration`` + ``Blip2Processor``).

    ``caption(images, prompt, settings)`` decodes each :class:`FaceImage` (``load()``), runs
    batched greedy ``model.generate`` in batches of ``settings.batch_size`` under
    ``torch.inference_mode()`` and returns the new text of each image (the prompt is not repeated),
    decoded with ``skip_special_tokens=True`` and stripped. Every prompt of a batch is the same, so
    no row is padded; decoder-only tokenizers are still set to pad on the left, as batched
    generation needs.

    ``settings.dtype`` is the compute dtype ("auto": bfloat16 on CUDA, float16 where bfloat16 is
    unsupported, float32 on CPU); the model is cast (:func:`cast_model`) when it differs from the
    model's current one, and pixel values are cast to the model's dtype. A cast never pretends to
    precision the weights no longer have: weights loaded (or already cast) in bfloat16 or float16
    are not cast to float32 or to the other 16-bit type, which raises :class:`ConfigError` (load
    the model in the dtype the settings ask for, or in float32). Casting float32 weights down
    gives what ``from_pretrained(dtype=...)`` gives, since the released checkpoints are float32.

    Speed levers (identical greedy tokens up to floating-point noise; each one that is switched
    on is recorded in :attr:`identity`): ``attn_implementation`` (``"sdpa"`` is transformers 5.24's
    default for BLIP-2, OPT and T5; ``"eager"`` the reference), ``static_cache`` (a pre-allocated
    KV cache: ``cache_implementation="static"``) and ``compile`` (``torch.compile`` of the language
    model's decoding step, which transformers applies only with a static cache, so ``compile``
    needs ``static_cache``).

    Build it with :meth:`from_pretrained` (hub cache or local folder) or
    :func:`tiny_blip2_captioner`; the constructor takes a model and processor already made.
    """

    def __init__(self, model: "Blip2ForConditionalGeneration", processor: "Blip2Processor", *, name: str,
                 identity: Mapping[str, Any], device: "str | torch.device" = "auto",
                 attn_implementation: str | None = None, static_cache: bool = False, compile: bool = False):
        from fer_utils.models.runtime import resolve_device

        self.device = resolve_device(device)
        self.name = name
        text_type = model.config.text_config.model_type
        self.is_encoder_decoder = bool(model.config.text_config.is_encoder_decoder)
        if compile and not static_cache:
            raise ConfigError(f"{name}: compile=True needs static_cache=True: transformers compiles the decoding "
                              "step only with a static KV cache (a dynamic cache changes shape every token)")
        if attn_implementation is not None:
            check_attn_implementation(attn_implementation, text_type)
            model.set_attn_implementation(attn_implementation)
            if model.config._attn_implementation != attn_implementation:
                raise ConfigError(f"{name}: could not switch attention to {attn_implementation!r} "
                                  f"(the model kept {model.config._attn_implementation!r})")
        self._check_processor(model, processor, name)
        if not self.is_encoder_decoder:
            processor.tokenizer.padding_side = "left"
        self.model = model.to(self.device).eval()
        self._precision = _model_dtype(model)  # the dtype the weights' values were last rounded to
        self.processor = processor
        self.attn_implementation = attn_implementation
        self.static_cache = bool(static_cache)
        self.compile = bool(compile)
        extra: dict[str, Any] = {}
        if attn_implementation is not None:
            extra["attn_implementation"] = attn_implementation
        if static_cache:
            extra["static_cache"] = True
        if compile:
            extra["compile"] = True
        self._identity = {**dict(identity), **extra}

    @staticmethod
    def _check_processor(model: "Blip2ForConditionalGeneration", processor: "Blip2Processor", name: str) -> None:
        """The processor must insert exactly the model's image tokens, or generate ignores the image."""
        expected = model.config.num_query_tokens
        if processor.num_query_tokens != expected:
            raise ConfigError(f"{name}: the processor inserts {processor.num_query_tokens} image tokens, the model "
                              f"expects num_query_tokens={expected}; without them generate would ignore the image "
                              "(an old processor_config.json: update the snapshot)")
        token = _image_token(processor)
        image_id = processor.tokenizer.convert_tokens_to_ids(token)
        if image_id != model.config.image_token_index:
            raise ConfigError(f"{name}: the tokenizer's image token {token!r} has id "
                              f"{image_id}, the model's config says image_token_index={model.config.image_token_index}")

    @property
    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    # -- loading ----------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, model_id_or_path: str, revision: str | None = None, device: str = "auto",
                        dtype: str = "auto", *, attn_implementation: str | None = None,
                        static_cache: bool = False, compile: bool = False) -> "Blip2Captioner":
        """Load a BLIP-2 from a local folder or from the Hugging Face cache, never from the network.

        ``model_id_or_path``: a folder (made by ``save_pretrained`` or ``hf download --local-dir``)
        or a hub id such as :data:`ORIGINAL_MODEL_ID`, read with ``local_files_only=True`` at
        ``revision`` (a commit hash, branch or tag; None = the cached ``main``). Missing weights raise
        :class:`WeightsNotFoundError` naming the model, the cache and the download command.
        ``dtype`` is the load dtype, resolved as in :func:`resolve_dtype`.

        :attr:`identity`: ``{"backend": "blip2", "model": model_id_or_path, "revision": ...}``: the
        snapshot's commit hash for a hub id, ``"sha256:<hex>"`` over the folder's files
        (:func:`folder_sha256`) for a folder.
        """
        from transformers import Blip2ForConditionalGeneration, Blip2Processor

        from fer_utils.models.runtime import resolve_device

        resolved_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, resolved_device)
        folder, revision_id = cls._locate(model_id_or_path, revision)
        try:
            with quiet_loading():
                processor = Blip2Processor.from_pretrained(folder, local_files_only=True)
                model = Blip2ForConditionalGeneration.from_pretrained(folder, local_files_only=True, dtype=torch_dtype)
        except OSError as exc:
            raise _weights_not_found(model_id_or_path, revision,
                                     f"the files in {folder} are incomplete ({exc})") from exc
        identity = {"backend": "blip2", "model": model_id_or_path, "revision": revision_id}
        return cls(model, processor, name=model_id_or_path, identity=identity, device=resolved_device,
                   attn_implementation=attn_implementation, static_cache=static_cache, compile=compile)

    @staticmethod
    def _locate(model_id_or_path: str, revision: str | None) -> tuple[str, str]:
        """(folder to load, revision for the identity) of a local folder or a cached hub snapshot."""
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

        if os.path.isdir(model_id_or_path):
            if revision is not None:
                raise ConfigError(f"{model_id_or_path}: a revision ({revision!r}) applies to hub ids, not to a "
                                  "local folder")
            return model_id_or_path, "sha256:" + folder_sha256(model_id_or_path)
        try:
            snapshot = snapshot_download(repo_id=model_id_or_path, revision=revision, local_files_only=True)
        except HFValidationError as exc:
            raise ConfigError(f"{model_id_or_path!r} is neither an existing folder nor a valid Hugging Face model "
                              f"id ({exc})") from None
        except LocalEntryNotFoundError:
            raise _weights_not_found(model_id_or_path, revision, "not found in the local Hugging Face cache") from None
        commit = Path(snapshot).name
        if not re.fullmatch(r"[0-9a-f]{40}", commit):
            raise WeightsNotFoundError(f"BLIP-2 model {model_id_or_path!r}: cached snapshot {snapshot} is not named "
                                       "by a commit hash; cannot record its revision")
        return snapshot, commit

    # -- generation -------------------------------------------------------------------------------

    def use_dtype(self, dtype: str) -> "torch.dtype":
        """Cast the model to the compute dtype ``dtype`` names (as :meth:`caption` does with
        ``settings.dtype``), unless that would pretend to precision the weights no longer have (see
        the class docstring); returns the torch dtype."""
        import torch

        wanted = resolve_dtype(dtype, self.device)
        if _model_dtype(self.model) == wanted:
            return wanted
        if self._precision != torch.float32 and wanted != self._precision:
            wanted_name = str(wanted).removeprefix("torch.")
            raise ConfigError(
                f"{self.name}: generation dtype {dtype!r} ({wanted}) requested, but the weights are held in "
                f"{self._precision} (loaded or cast so); casting them to {wanted} would not give the captions of "
                f"weights loaded in {wanted}. Load the model with dtype={wanted_name!r}"
                + ("." if wanted_name == "float32" else " or 'float32'."))
        cast_model(self.model, wanted)
        if wanted != torch.float32:
            self._precision = wanted
        return wanted

    def _generate_kwargs(self, settings: GenerationSettings) -> dict[str, Any]:
        kwargs: dict[str, Any] = dict(
            max_new_tokens=settings.max_new_tokens, min_new_tokens=settings.min_new_tokens,
            num_beams=settings.num_beams, repetition_penalty=float(settings.repetition_penalty),
            no_repeat_ngram_size=settings.no_repeat_ngram_size, do_sample=False,
        )
        if self.static_cache:
            kwargs["cache_implementation"] = "static"
            if self.compile:
                from transformers import CompileConfig
                config = CompileConfig(mode="reduce-overhead" if self.device.type == "cuda" else "default")
                config._compile_all_devices = True  # compile on CPU too when asked to
                kwargs["compile_config"] = config
            else:
                kwargs["disable_compile"] = True  # transformers would otherwise compile static-cache decoding on CUDA
        return kwargs

    def generate_token_ids(self, images: Sequence[FaceImage], prompt: str,
                           settings: GenerationSettings) -> list[list[int]]:
        """The new token ids of each image, in order: no prompt ids, no decoder start token, and
        nothing after the first end-of-sequence token (which is kept, when one was generated)."""
        import torch

        if not isinstance(prompt, str):
            raise ConfigError(f"{self.name}: prompt must be a string, got {type(prompt).__name__}")
        dtype = self.use_dtype(settings.dtype)
        kwargs = self._generate_kwargs(settings)
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        start = self.model.generation_config.decoder_start_token_id
        out: list[list[int]] = []
        with torch.inference_mode():
            for first in range(0, len(images), settings.batch_size):
                batch = [image.load() for image in images[first:first + settings.batch_size]]
                inputs = self.processor(images=batch, text=[prompt] * len(batch), return_tensors="pt")
                input_ids = inputs["input_ids"].to(self.device)
                attention_mask = inputs["attention_mask"].to(self.device)
                pixel_values = inputs["pixel_values"].to(self.device, dtype)
                ids = self.model.generate(pixel_values=pixel_values, input_ids=input_ids,
                                          attention_mask=attention_mask, **kwargs)
                ids = self._new_tokens(ids, input_ids, start)
                for row in ids.tolist():
                    cut = next((i + 1 for i, t in enumerate(row) if t in eos_ids), len(row))
                    out.append(row[:cut])
        return out

    def _new_tokens(self, ids: "torch.Tensor", input_ids: "torch.Tensor", start: int | None) -> "torch.Tensor":
        """Drop what ``generate`` returns besides new tokens: the prompt (decoder-only, when echoed)
        or the decoder start token (encoder-decoder)."""
        if self.is_encoder_decoder:
            if start is not None and ids.shape[1] and bool((ids[:, 0] == start).all()):
                return ids[:, 1:]
            return ids
        n = input_ids.shape[1]
        if ids.shape[1] >= n and bool((ids[:, :n] == input_ids).all()):
            return ids[:, n:]
        return ids  # a transformers version that returns only the new tokens

    def caption(self, images: Sequence[FaceImage], prompt: str, settings: GenerationSettings) -> list[str]:
        """One caption per image: the generated text after the prompt, special tokens skipped, stripped."""
        ids = self.generate_token_ids(images, prompt, settings)
        if not ids:
            return []
        texts = self.processor.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [text.strip() for text in texts]


# --- a tiny BLIP-2 built in code -------------------------------------------------------------------

def tiny_tokenizer(kind: str = "opt", vocab_size: int = 400):
    """A byte-level BPE trained on :data:`TINY_CORPUS`, as a ``PreTrainedTokenizerFast``.

    Special tokens ``<pad>`` (0), ``<s>`` (1), ``</s>`` (2). Like the real tokenizers, ``opt``
    prepends ``<s>`` to a text and ``t5`` appends ``</s>``. Deterministic: same corpus, same merges.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if kind not in TINY_KINDS:
        raise ConfigError(f"tiny BLIP-2 kind must be one of {', '.join(TINY_KINDS)}, got {kind!r}")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(TINY_CORPUS, trainer)
    if kind == "opt":
        bpe.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                           special_tokens=[("<s>", 1)])
    else:
        bpe.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A $B </s>",
                                                           special_tokens=[("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   padding_side="left" if kind == "opt" else "right")


def _processor(tokenizer, image_size: int, num_query_tokens: int) -> "Blip2Processor":
    from transformers import Blip2Processor, BlipImageProcessor

    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    return Blip2Processor(image_processor, tokenizer, num_query_tokens=num_query_tokens)


def tiny_blip2(kind: str = "opt", seed: int = 0, image_size: int = 32
               ) -> tuple["Blip2ForConditionalGeneration", "Blip2Processor"]:
    """A tiny random-weight BLIP-2 and its processor, built in code (nothing is downloaded).

    Vision tower: 2 layers, hidden 32, patch 8 at ``image_size``; Q-Former: 2 layers, hidden 32,
    4 query tokens; language model: a 2-layer OPT (``kind="opt"``, decoder-only) or a 2+2-layer T5
    with gated-GELU like flan-t5 (``kind="t5"``, encoder-decoder), over :func:`tiny_tokenizer`'s
    vocabulary plus the processor's ``<image>`` token. Weights come from ``seed`` under
    ``torch.random.fork_rng``: the same seed gives the same weights, and the global torch RNG is
    left as it was. Weight matrices are drawn from N(0, TINY_WEIGHT_STD²) (std 0.2), ten times
    transformers' usual 0.02, so that the image changes the caption: at 0.02 every image gets the
    same repetitive caption, and a check that batched captions equal one-at-a-time ones would
    prove nothing. The model is in eval mode, float32, on the CPU.
    """
    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration, OPTConfig, T5Config

    if kind not in TINY_KINDS:
        raise ConfigError(f"tiny BLIP-2 kind must be one of {', '.join(TINY_KINDS)}, got {kind!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8 or image_size % 8:
        raise ConfigError(f"tiny BLIP-2 image_size must be a multiple of the patch size 8, got {image_size!r}")
    num_query_tokens = 4
    processor = _processor(tiny_tokenizer(kind), image_size, num_query_tokens)
    tokenizer = processor.tokenizer
    vocab = len(tokenizer)  # the BPE vocabulary plus <image>
    ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
               eos_token_id=tokenizer.eos_token_id)
    if kind == "opt":
        text = OPTConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=2,
                         max_position_embeddings=128, word_embed_proj_dim=32, **ids)
    else:
        text = T5Config(vocab_size=vocab, d_model=32, d_ff=64, d_kv=16, num_layers=2, num_decoder_layers=2,
                        num_heads=2, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                        decoder_start_token_id=tokenizer.pad_token_id, **ids)
    config = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        qformer_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            encoder_hidden_size=32, cross_attention_frequency=1, vocab_size=vocab,
                            max_position_embeddings=64),
        text_config=text.to_dict(), num_query_tokens=num_query_tokens,
        image_token_index=tokenizer.convert_tokens_to_ids(_image_token(processor)),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Blip2ForConditionalGeneration(config)
        with torch.no_grad():
            for param in model.parameters():
                if param.ndim >= 2:  # weight matrices, embeddings, query tokens; biases and norms keep their init
                    param.normal_(0.0, TINY_WEIGHT_STD)
    return model.eval(), processor


def tiny_blip2_captioner(kind: str = "opt", seed: int = 0, device: str = "cpu", *,
                         attn_implementation: str | None = None, static_cache: bool = False,
                         compile: bool = False) -> Blip2Captioner:
    """A :class:`Blip2Captioner` over :func:`tiny_blip2`: real code paths, **meaningless captions**.

    Its weights are random, so its captions say nothing about the face (``meaningful = False``;
    pages that show them say so). Use it to test and time the pipeline, never to measure what
    captions add. ``name``: ``tiny-blip2-<kind>``; identity: backend ``tiny-blip2``, kind, seed,
    the weights' sha256 and a build version.
    """
    from fer_utils.models.runtime import weights_sha256

    model, processor = tiny_blip2(kind, seed)
    identity = {"backend": "tiny-blip2", "kind": kind, "seed": seed, "weights": weights_sha256(model),
                "version": _TINY_IDENTITY_VERSION}
    captioner = Blip2Captioner(model, processor, name=f"tiny-blip2-{kind}", identity=identity, device=device,
                               attn_implementation=attn_implementation, static_cache=static_cache, compile=compile)
    captioner.meaningful = False
    return captioner


# --- the original model's architecture, for speed measurements --------------------------------------

def original_architecture_config(image_token_index: int, pad_token_id: int = 0, eos_token_id: int = 1,
                                 decoder_start_token_id: int = 0) -> "Blip2Config":
    """The architecture of ``Salesforce/blip2-flan-t5-xl`` (:data:`ORIGINAL_MODEL_ID`), written in code.

    Vision: ViT-g/14 (hidden 1408, 39 layers, 16 heads, MLP 6144, patch 14, image 224); Q-Former:
    hidden 768, 12 layers, 12 heads, MLP 3072, 32 query tokens, cross-attention every 2nd layer
    onto the 1408-d image features; language model: flan-t5-xl (d_model 2048, d_ff 5120, 24
    encoder + 24 decoder layers, 32 heads of 64, vocabulary 32128, gated-GELU, untied output
    layer). About 3.9 billion parameters. The token ids are the caller's (the real model: image
    token 32100, pad 0, eos 1) and do not change the amount of computation. For timing with random
    weights only: it is no substitute for the real weights.
    """
    from transformers import Blip2Config, T5Config

    text = T5Config(vocab_size=32128, d_model=2048, d_ff=5120, d_kv=64, num_layers=24, num_decoder_layers=24,
                    num_heads=32, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                    relative_attention_num_buckets=32, relative_attention_max_distance=128, layer_norm_epsilon=1e-6,
                    pad_token_id=pad_token_id, eos_token_id=eos_token_id,
                    decoder_start_token_id=decoder_start_token_id)
    return Blip2Config(
        vision_config=dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16,
                           image_size=224, patch_size=14, hidden_act="gelu", layer_norm_eps=1e-6, qkv_bias=True),
        qformer_config=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                            cross_attention_frequency=2, encoder_hidden_size=1408, vocab_size=30522,
                            max_position_embeddings=512),
        text_config=text.to_dict(), num_query_tokens=32, image_token_index=image_token_index,
    )


def original_architecture_model(config: "Blip2Config", device: "str | torch.device" = "meta",
                                seed: int = 0) -> "Blip2ForConditionalGeneration":
    """A random-weight ``Blip2ForConditionalGeneration`` of ``config`` (:func:`original_architecture_config`)
    built on ``device``, in float32, eval mode. On ``"meta"`` no weight memory is allocated (for
    counting parameters). transformers 5.24's ``T5Config`` always ties T5's output layer to its
    input embeddings; flan-t5-xl's checkpoint has its own output layer (transformers unties the two
    when it loads one), so it is untied here too: about 3.94 billion parameters, as released.
    """
    import torch
    from transformers import Blip2ForConditionalGeneration

    device = torch.device(device)
    forked = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked), device:
        torch.manual_seed(seed)
        model = Blip2ForConditionalGeneration(config)
        language_model = model.language_model
        if config.text_config.model_type == "t5" and language_model.lm_head.weight is language_model.shared.weight:
            language_model.lm_head.weight = torch.nn.Parameter(language_model.shared.weight.detach().clone())
    return model.eval()


def original_architecture_processor(num_query_tokens: int = 32, image_size: int = 224) -> "Blip2Processor":
    """A processor for :func:`original_architecture_config`: the real model's image preprocessing
    (224 px, bicubic, CLIP mean/std) with the tiny T5-style tokenizer (the real one cannot be
    downloaded here; a prompt then has about as many tokens as with flan-t5's SentencePiece, not the
    same ones)."""
    return _processor(tiny_tokenizer("t5"), image_size, num_query_tokens)


__all__ = ["ATTN_IMPLEMENTATIONS", "Blip2Captioner", "OPT_MODEL_ID", "ORIGINAL_MODEL_ID", "TINY_CORPUS", "TINY_KINDS",
           "TINY_WEIGHT_STD", "cast_model", "check_attn_implementation", "folder_sha256",
           "original_architecture_config", "original_architecture_model", "original_architecture_processor",
           "resolve_dtype", "tiny_blip2", "tiny_blip2_captioner", "tiny_tokenizer"]
