"""Evaluation: metrics, ensembles, test-time augmentation and plots."""
