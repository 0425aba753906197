"""Pairwise judges for the win-rate check: ``judge(prompts, first, second) -> [0 | 1 | 0.5 | None]``."""
