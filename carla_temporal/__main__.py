"""``python -m carla_temporal`` is the ``train`` command, ``train live`` included."""

from carla_temporal.script import main

main()
