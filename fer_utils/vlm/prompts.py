"""The named prompts a captioner is asked with, and how a config's ``prompt`` value resolves. Torch-free.

The original study asked BLIP-2 one question (:data:`PROMPTS` ``["original"]``). The other named
prompts are the variations the study compares against it: one that lists the seven class words
(so a caption is likely to *be* one of them), a description of the face's parts (eyebrows, eyes,
mouth: text that carries more than a single word), and a one-word answer. All use BLIP-2's
``Question: ... Answer:`` format, which is what the original prompt used.

A config's ``prompt`` is either one of these names or the literal text of a prompt (anything
with a space in it): :func:`resolve_prompt` returns both the name (``"custom"`` for literal text)
and the text, and the text is what captioners receive and caches key entries by.

:data:`CONSTANT_CAPTION` is not a prompt but a caption: the one neutral sentence the fusion study's
constant-caption control gives every image, and the dashboard's explanation compares a caption with.
"""
from __future__ import annotations

from fer_utils.errors import ConfigError
from fer_utils.labels import EMOTIONS

CUSTOM = "custom"
"""The name :func:`resolve_prompt` gives a literal prompt text."""


def _listing(words: tuple[str, ...]) -> str:
    """``a, b, c or d``."""
    return ", ".join(words[:-1]) + " or " + words[-1]


PROMPTS: dict[str, str] = {
    "original": "Question: What emotion is the person showing in the image? Answer:",
    "emotions": f"Question: Which emotion is the person's face showing: {_listing(EMOTIONS)}? Answer:",
    "describe": "Question: Describe the person's eyebrows, eyes and mouth in the image. Answer:",
    "one_word": "Question: In one word, what emotion is the person showing in the image? Answer:",
}
"""Prompt name -> prompt text. ``original`` is the original study's prompt, word for word."""

CONSTANT_CAPTION = "A photo of a person's face."
"""The one caption of the constant-caption control: any gain that survives it is not the captions'."""


def resolve_prompt(name_or_text: str) -> tuple[str, str]:
    """``(name, text)`` of a prompt given by name or as literal text.

    A registered name (surrounding whitespace ignored) gives its :data:`PROMPTS` text. Any other
    string containing whitespace is taken as the prompt text itself, unchanged, named
    ``"custom"``. An empty string or an unknown single word (most likely a misspelt name) raises
    :class:`ConfigError` naming the parameter ``prompt`` and listing the names.
    """
    if not isinstance(name_or_text, str):
        raise ConfigError(f"parameter 'prompt' must be a prompt name or a prompt text, "
                          f"got {type(name_or_text).__name__} {name_or_text!r}")
    key = name_or_text.strip()
    if key in PROMPTS:
        return key, PROMPTS[key]
    names = ", ".join(PROMPTS)
    if not key:
        raise ConfigError(f"parameter 'prompt' is empty; give a prompt name ({names}) or a prompt text")
    if any(ch.isspace() for ch in key):
        return CUSTOM, name_or_text
    raise ConfigError(f"parameter 'prompt': unknown prompt name {key!r}; expected one of {names}, "
                      "or a prompt text (any text with a space in it)")


__all__ = ["CONSTANT_CAPTION", "CUSTOM", "PROMPTS", "resolve_prompt"]
