"""Agora: a simulation-based multi-agent training platform for LLM agents."""

import os

__version__ = "0.1.0"

# Everything runs offline: MLflow 3 sends usage telemetry from the moment it is imported (and from the
# `agora ui` server it spawns, which inherits this environment) unless told not to. A user who wants it
# sets MLFLOW_DISABLE_TELEMETRY=false.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# MLflow draws a tqdm bar on stderr for every artifact download (`agora.listing.run_episodes`, the tests'
# reads); Agora's own displays are rich's.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
