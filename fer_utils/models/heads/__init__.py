"""Fusion heads: classifiers on CNN features + caption text embeddings, named by a registry.

=========================  =========================================================================
:mod:`.registry`           the registry (``create_head``, ``list_heads``, ``head_info``,
                           ``describe_heads``), the one input every head takes (``fuse``, ``l2``,
                           ``input_dims``: CNN features first, then the text embedding) and what the
                           heads share (``Head``, ``mlp_layers``)
:mod:`.original`           the original study's heads (family ``original``), reproduced exactly so
                           its ``state_dict`` files load, flaws included
:mod:`.fusion`             heads that really fuse (family ``fusion``: ``token_attention``,
                           ``gated``), ``attention_weights`` and ``gate_values``
:mod:`.late`               late fusion of two classifiers' probabilities (``LateFusion``; not a head)
=========================  =========================================================================

Importing any part of the package runs this file, which imports :mod:`.original` and
:mod:`.fusion`, so every head is registered before a name is looked up. Nothing is re-exported
here: import from the submodules.
"""
from fer_utils.models.heads import fusion, original  # noqa: F401  (registers every head)
