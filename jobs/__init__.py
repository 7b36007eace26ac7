"""The stages. They know nothing about SLURM: each module registers its kinds with the engine."""
from . import digits, emnist, evaluate, finetune, scratch_stages, train  # noqa: F401  (registration happens on import)
