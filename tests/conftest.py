"""Shared fixtures: temporary MLflow stores and tiny models built from a config (no download).

`make test` runs the suite in 2 pytest-xdist workers (`-n 2 --dist loadgroup`). A test that uses a fixture of
`SERIAL_GROUPS` gets that fixture's `xdist_group` mark (pytest_collection_modifyitems below), so all of them run
in one worker, one after another: the machine holds one local Ray instance (and one llama.cpp server, one MLflow
server) at a time instead of one per worker, and a test that looks for Ray's processes sees no other worker's.
A test that requests such a fixture by name at run time (`request.getfixturevalue`) carries the mark itself.
"""

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


# fixture -> the xdist group of the tests that use it (the first that matches: a test never gets two groups,
# which xdist would join into a third)
SERIAL_GROUPS = {"ray_address": "ray", "llama_server": "llama_server", "mlflow_server": "mlflow_server"}


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if workers := os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
        # N workers, each with torch's default of one OpenMP thread per core, would ask N x the CPUs; a thread
        # waiting for a core stalls every parallel op. Read by OpenMP when torch loads (not yet: no test module
        # is imported before pytest_configure); the subprocesses the tests start inherit it.
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // int(workers))))


@pytest.hookimpl(wrapper=True)  # marks before pytest-xdist's own hook, which writes them into the test ids
def pytest_collection_modifyitems(config, items):
    for item in items:
        group = next((group for name, group in SERIAL_GROUPS.items() if name in item.fixturenames), None)
        if group is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))
    result = yield
    # In an xdist worker under --dist loadgroup a grouped test's id ends `@group`; without it xdist spreads the
    # group over the workers, silently (pytest-xdist 3.8.0 under pytest 9.2: pytest-xdist issue #1386): such a
    # test fails at its setup instead, before its fixture starts a second Ray instance or server.
    if getattr(config.option, "loadgroup", False):
        for item in items:
            if item.get_closest_marker("xdist_group") and "@" not in item.nodeid.rsplit("]", 1)[-1]:
                item.stash[UNGROUPED] = (
                    f"pytest-xdist did not put this test in its xdist group (pytest {pytest.__version__}): install the "
                    "versions pyproject.toml pins (pip install -e '.[dev]'), or run the suite in one process (-n 0)"
                )
    return result


UNGROUPED = pytest.StashKey[str]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if why := item.stash.get(UNGROUPED, None):
        pytest.fail(why, pytrace=False)


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


def learner_step(prompt, completion, logprobs, agent="a", temperature=0.7):
    """A sampled decision of seat `agent` as a trajectory records it (logprobs None: not sampled, e.g. scripted)."""
    from agora.trajectory import Step

    return Step(
        agent=agent,
        turn=0,
        prompt="",
        text="",
        action=None,
        prompt_ids=list(prompt),
        completion_ids=list(completion),
        logprobs=None if logprobs is None else list(logprobs),
        temperature=temperature,
    )
