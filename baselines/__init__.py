"""Baseline algorithms on the shared loop; each module registers one algorithm."""
