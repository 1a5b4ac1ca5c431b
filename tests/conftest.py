"""Shared fixtures: temporary MLflow stores and tiny models built from a config (no download)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch) -> str:
    """A fresh sqlite MLflow store; also the process default, so nothing reaches mlflow/ in the repo."""
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    from agora.models import prepare_embedded

    return prepare_embedded()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_model_dir) -> str:
    """A 2-layer random Llama with the embedded model's tokenizer and chat template: fast, output is garbage."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def llama_server():
    """llama.cpp's server (llama-cpp-python[server]) serving the embedded GGUF on 127.0.0.1 at a free port,
    with an API key in the environment variable AGORA_TEST_SERVER_KEY (tests/servers.py)."""
    from tests.servers import LlamaServer

    server = LlamaServer.start()
    old = os.environ.get("AGORA_TEST_SERVER_KEY")
    os.environ["AGORA_TEST_SERVER_KEY"] = server.key
    yield server
    server.stop()
    if old is None:
        os.environ.pop("AGORA_TEST_SERVER_KEY", None)
    else:
        os.environ["AGORA_TEST_SERVER_KEY"] = old


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray instance (4 CPUs) for a test module that plays on Ray workers (~5 s to start), stopped after
    it; its GCS address. Runs and campaigns join it instead of starting their own."""
    ray = pytest.importorskip("ray")
    from agora.execution import init_ray

    context = init_ray("local", num_cpus=4)
    yield context.address_info["gcs_address"]
    ray.shutdown()


def train_killed_at(file: Path, tracking_uri: str, marker: Path, *, timeout_s: float = 240.0) -> None:
    """`agora train FILE` in a subprocess, SIGKILLed as soon as `marker` (a checkpoint's state.json) exists: what a
    killed campaign leaves behind (its MLflow run RUNNING), for a test to resume."""
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "agora.cli", "train", str(file)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout_s
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
