"""The label maps (TOML files read by :func:`dataset.labels.load_label_map`)."""
