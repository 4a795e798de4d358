"""Training of the temporal perception pipeline (``train`` command)."""
