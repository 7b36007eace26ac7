"""Data sets: official on-disk formats (formats), the data sets by name (datasets), splits and
relabelling (splits), manifests and array files (files)."""
