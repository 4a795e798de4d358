"""Training on one engine (:mod:`train.engine`) for every task of the registry (:mod:`train.tasks`).

One package per task (:mod:`train.pipeline`, :mod:`train.forecast`, :mod:`train.sim2real`) and the
modules they share: configs (:mod:`train.config`), device and seeds (:mod:`train.context`),
checkpoints (:mod:`train.checkpoint`, :mod:`train.run_folder`), metrics, TensorBoard, the
``train`` command (:mod:`train.cli`).
"""
