"""``python -m train`` is the ``train`` command (used with torchrun)."""

from train.cli import main

main()
