"""``python -m train``: the training commands (run, eval, predict, models), for torchrun.

The whole ``train`` command, ``train live`` included, is ``python -m carla_temporal``.
"""

from train.cli import main

main()
