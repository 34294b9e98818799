"""Fitting and scoring models: :mod:`.train` (the training loop, early stopping, class weights and
losses), :mod:`.evaluate` (predictions and the study's metrics), :mod:`.stats` (bootstrap intervals,
McNemar, Holm), :mod:`.features` (CNN features through the cache), :mod:`.repro` (seeds and
provenance). Imports go down only: to ``data``, ``models`` and the torch-free leaves."""
