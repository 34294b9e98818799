"""Procedural synthetic faces written in RAF-DB's exact on-disk layout.

The study's pipeline must run end to end without the real RAF-DB (licensed on request, never
shipped). :func:`generate` writes a stand-in with the same files, names, label file and class
proportions, so every loader, split and training step can be exercised on it. The layout is the
one :mod:`fer_utils.data.rafdb` reads (label file, ``aligned`` 100 x 100 crops and ``original``
photos under ``basic/``, train names with five digits and test names with four, train lines
first); ``synthetic.json`` and ``SYNTHETIC.md`` beside ``basic/`` say what the set is and how it
was made.

- :mod:`~fer_utils.data.synthetic.faces` draws one face from facial action units
  (:func:`draw_face`);
- :mod:`~fer_utils.data.synthetic.writer` plans and writes the data set (:func:`generate`,
  :func:`class_counts`; :func:`is_synthetic` recognises one), through :mod:`fer_utils.data.rafdb`'s layout functions.

A data set is byte-identical for a given seed and ``scale``, whatever the number of worker
processes: each image is drawn from its own generator seeded with ``(seed, split, index)``.
"""
from fer_utils.data.synthetic.faces import draw_face
from fer_utils.data.synthetic.writer import (
    DEFAULT_MIN_PER_CLASS,
    DEFAULT_SCALE,
    DEFAULT_SEED,
    GENERATOR_VERSION,
    RAFDB_TEST_COUNTS,
    RAFDB_TRAIN_COUNTS,
    class_counts,
    generate,
    is_synthetic,
    made_by_another_version,
    raised_classes_note,
)

__all__ = [
    "DEFAULT_MIN_PER_CLASS", "DEFAULT_SCALE", "DEFAULT_SEED", "GENERATOR_VERSION", "RAFDB_TEST_COUNTS", "RAFDB_TRAIN_COUNTS",
    "class_counts", "draw_face", "generate", "is_synthetic", "made_by_another_version",
    "raised_classes_note",
]
