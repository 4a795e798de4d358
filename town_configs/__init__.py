"""The packaged town files (TOML, read by :func:`carla_capture.config.load_town`)."""
