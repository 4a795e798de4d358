"""clipcore: the ground floor of carla-temporal, which every other package stands on.

The clip format (what ``carla_capture`` writes and ``dataset`` / ``train`` read):

- :mod:`clipcore.records`: the frozen :class:`~clipcore.records.Frame` / ``Clip`` record every
  backend and importer produces;
- :mod:`clipcore.tags` (CARLA's semantic tags and palette), :mod:`clipcore.geometry` (camera and
  pose conventions, see docs/conventions.md);
- :mod:`clipcore.schema` (format v3: layout, depth code, structure and content checks),
  :mod:`clipcore.predictors` (reversible row predictors applied before compression),
  :mod:`clipcore.shards` (the shard writer) and :mod:`clipcore.shard_reader` (the one validating
  reader);
- :mod:`clipcore.folder` (a dataset folder's shards, a clip by id), :mod:`clipcore.manifest`
  (reading ``split.json``).

And what every floor shares: :mod:`clipcore.errors`, :mod:`clipcore.fsutil` (OS faults as one
line, atomic writes), :mod:`clipcore.settings` (TOML, deep merge, ``--set``),
:mod:`clipcore.clitools` / :mod:`clipcore.cliopts` (click groups and options from config fields)
and :mod:`clipcore.pictures`. Nothing here imports torch or the packages above it.
"""

__version__ = "0.2.0"
