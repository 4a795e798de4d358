"""``python -m carla_capture`` is the ``capture`` command."""

from carla_capture.cli import main

main()
