"""``capture import``: bring data recorded elsewhere into the project's shards.

One module per source (:mod:`~carla_capture.importers.rosbag`,
:mod:`~carla_capture.importers.cityscapes`), the options of each as a config
(:mod:`~carla_capture.importers.config`), one report type for all of them
(:class:`~carla_capture.importers.report.ImportReport`) and the click commands
(:mod:`~carla_capture.importers.cli`). Every importer writes through
:class:`~clipcore.shards.ShardWriter`'s public API, so its shards are checked like recorded ones.
"""
