"""carla_capture: record synchronized RGB / semantic / depth / pose clips into HDF5 shards.

The pieces, in the order data flows through them:

- :mod:`carla_capture.backends` produce :class:`~clipcore.records.Clip` records
  (embedded ``synthetic`` simulator, or a CARLA 0.9.16 server);
- :mod:`clipcore.shards` (the ground floor) validates and writes them into HDF5 shards and
  reads them back;
- :mod:`carla_capture.record` is the resumable record loop behind ``capture record``;
- :mod:`carla_capture.inspect` summarises shards and draws contact sheets.
"""

from clipcore import __version__

__all__ = ["__version__"]
