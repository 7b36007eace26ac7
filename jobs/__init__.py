"""The stages and their library. They know nothing about SLURM: jobs.stages registers the kinds."""
from . import stages  # noqa: F401 - registration happens on import
