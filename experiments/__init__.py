"""Named experiments: one file each, with a `get_config()` returning a `genie.config.Config`."""
