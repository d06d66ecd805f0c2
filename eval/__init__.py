"""Evaluation: judges, test-set evaluation of policies, and the paper's tables."""
