"""Isolated code execution with resource limits (built in the sandbox issue)."""
