"""The sim2real task: a twin VAE carrying depth and segmentation to real images.

``train run sim2real``.

Its config (:mod:`~train.sim2real.config`), loss terms (:mod:`~train.sim2real.losses`), its two
stages on the engine (:mod:`~train.sim2real.stage`), evaluation and predictions; the task in
:mod:`~train.sim2real.task`.
"""
