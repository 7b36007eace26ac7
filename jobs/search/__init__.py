"""Hyper-parameter search (Optuna): jobs/search/hpo.py."""
