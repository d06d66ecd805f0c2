"""REBEL harness: the shared online loop, models, data and REBEL itself (Gao et al., NeurIPS 2024)."""
