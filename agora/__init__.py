"""Agora: a simulation-based multi-agent training platform for LLM agents."""

__version__ = "0.1.0"
