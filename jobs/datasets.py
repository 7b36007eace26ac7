"""Readers and writers of the official on-disk formats now live in jobs/formats.py (one reader
per format); these names are kept so existing stages, tests and configs keep working."""
from __future__ import annotations

from .formats import CIFAR10_FILES, CIFAR10_TRAIN, read_cifar10, read_idx, write_cifar10, write_idx

__all__ = ["CIFAR10_FILES", "CIFAR10_TRAIN", "read_cifar10", "read_idx", "write_cifar10", "write_idx"]
