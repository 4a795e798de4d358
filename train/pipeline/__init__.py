"""The pipeline task: the four stages of the temporal perception pipeline (``train run pipeline``).

Stages as data (:mod:`~train.pipeline.config`, the presets' schedules in
:mod:`~train.pipeline.schedules`), their networks and losses, the stages on the engine
(:mod:`~train.pipeline.stages`), the models of a trained run (:mod:`~train.pipeline.trained`),
evaluation, predictions on clips and videos; the task in :mod:`~train.pipeline.task`.
"""
