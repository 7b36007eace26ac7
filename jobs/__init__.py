"""The stages. They know nothing about SLURM: each module registers its kinds with the engine."""
# Registration happens on import.
from . import deploy, deploy_bench, deploy_export, digits, emnist, evaluate  # noqa: F401
from . import finetune, scratch_stages, tinyimagenet, train  # noqa: F401
from . import train_stage  # noqa: F401
from . import data_stages  # noqa: F401
