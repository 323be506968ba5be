"""Configuration as data: the names flags choose from, typed specs, and experiment files."""
