"""The roof: what composes a capture backend with trained models (``train live``).

The house, bottom up: :mod:`clipcore` (shard format, records, geometry, shared CLI and error
modules); :mod:`carla_capture` writes through it; :mod:`dataset` reads through it; :mod:`models`
stands on it alone; :mod:`train` reads through dataset and builds models. Only this package may
import both carla_capture and train.
"""
