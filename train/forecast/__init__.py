"""The forecasting task: future segmentation from past frames (``train run forecast``).

It trains in a pipeline run, after its stage 1.

Horizons as data (:mod:`~train.forecast.config`), the samples (:mod:`~train.forecast.data`), the
forecaster on the engine (:mod:`~train.forecast.stage`), the geometric warp baseline, evaluation
against every baseline and predictions; the task in :mod:`~train.forecast.task`.
"""
