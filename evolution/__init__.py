"""Critic, Optimizer, Historian and Forge (built in the evolution issues)."""
