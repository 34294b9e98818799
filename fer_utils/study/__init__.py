"""The study: the notebooks' steps, their records and pages, and the runner that executes them.

Which module serves which notebook (``notebooks/``):

========================  ======================================================================
``01_data``               :mod:`.experiment` (load and split), :mod:`.report`, :mod:`.plots`
``02_cnn_baselines``      :mod:`.experiment` (train, score, save a bundle), :mod:`.compare`
``03_cnn_compare``        :mod:`.compare` (tables over run records, the faithful rows)
``04_vlm_prompts``        :mod:`.prompt_study` (captions, votes, :mod:`.probe`), :mod:`.prompt_report`
``05_vlm_compare``        :mod:`.prompt_report`, :mod:`.compare`
``06_fusion``             :mod:`.fusion_study` (the notebook's steps), :mod:`.fusion` (heads trained and
                          compared), :mod:`.crossfit` (leakage-free CNN inputs), :mod:`.fusion_report`
``07_augmentation``,      :mod:`.ablation_study` (one recipe under several settings),
``08_class_weights``      :mod:`.ablation` (tests, tables and text of the pages)
========================  ======================================================================

Shared by every notebook: :mod:`.config` (each notebook's parameters, checked), :mod:`.runs` (run
records), :mod:`.report` and :mod:`.plots` (page text and figures).

The runner: :mod:`.runner` (``notebooks/study.yaml`` -> papermill runs -> the Jupyter Book),
:mod:`.freshness` (warm re-runs skip what did not change), :mod:`.speed` (the host's speed factor),
:mod:`.check` (``fer study check``: the study's invariants and time budget), :mod:`.weights`
(every pretrained model a plan needs, looked up before it starts: ``fer weights list``),
:mod:`.status` (the book's status section), :mod:`.archive` (results carried to another machine),
:mod:`.lab` (JupyterLab on the executed pages, kernels in the project folder: ``fer lab``).

Importing this package imports nothing else; its modules import torch only where they train.
"""
