"""Helpers the tests share, each written once: `cli` (the command line as a user runs it),
`cluster` (squeue/sacct reads and waits on the real local SLURM cluster), `datasets` (files in the
real on-disk formats), `experiments` (YAML experiment files), `contexts` (what the engine hands a
stage or `fit`), `gradients` (central differences), `results` (reading what a run wrote), and the
test-only stage kinds, executor and shared quickstart runs."""
