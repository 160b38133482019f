"""Experiments that ask one question of a model on the benchmark: colour swap, layer choice, robustness."""
