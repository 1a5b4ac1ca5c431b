"""Faster CPU matrix products for inference with few rows (decode steps, short prefills).

`nn.Linear` computes x @ W.T. With MKL on this project's AMD EPYC machine that product runs
far below memory bandwidth when x has few rows: 1 row goes through a matrix-vector path and 2-3
rows are done as that many matrix-vector products, each reading all of W again. The same product
written W @ x.T, with a single row doubled, runs as one bandwidth-bound GEMM. Measured there on
SmolLM2-135M's 49152 x 576 LM head: 9.8 ms -> 3.4 ms at 1 row, 36 -> 4.7 ms at 3 rows,
18 -> 7.7 ms at 8 rows; a whole decode step: 56 -> 33 ms at batch 1, ~108 -> ~75 ms at batch 8.
Results agree with x @ W.T to float rounding (|diff| <= 2e-6 on unit-scale inputs).

Only inference with at most MAX_ROWS rows uses it (grad disabled, float32, CPU): from ~64 rows
up (prefills, training) x @ W.T is as fast or faster, and training keeps PyTorch's own kernels.
Other CPUs and BLAS libraries may not share MKL's weakness, so `use_skinny_linears` times both
forms once per weight shape (a process remembers each verdict) and switches each layer only where
W @ x.T wins on its shape.

The two forms round differently (recorded logprobs differ by up to ~2e-5), and a timing verdict
can change from one load to the next, so the choice is pinnable and recorded: the kernel `"wx"`
(W @ x.T) or `"xw"` (x @ W.T, PyTorch's) is forced for every layer by an LLM policy's
`linear_kernel` setting or by AGORA_SKINNY_LINEAR=1 (wx) / 0 (xw), and `choices(model)` reports
what each weight shape of a loaded model uses (`describe` as one line, for a run's tags).
"""

from __future__ import annotations

import os
import re
import time

import torch

MAX_ROWS = 32
KERNELS = ("auto", "xw", "wx")  # time per shape | x @ W.T (nn.Linear's) everywhere | W @ x.T everywhere
_verdicts: dict[tuple[int, int], bool] = {}  # (out, in) features -> W @ x.T is faster on this machine


class SkinnyLinear(torch.nn.Linear):
    """An nn.Linear whose no-grad CPU float32 forward is W @ x.T (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if (
            torch.is_grad_enabled()
            or weight.device.type != "cpu"
            or weight.dtype != torch.float32
            or x.dtype != torch.float32
        ):
            return super().forward(x)
        flat = x.reshape(-1, x.shape[-1])
        rows = flat.shape[0]
        if rows > MAX_ROWS:
            return super().forward(x)
        out = skinny_product(weight, flat)
        if self.bias is not None:
            out += self.bias
        return out.view(*x.shape[:-1], weight.shape[0])


def skinny_product(weight: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """flat @ weight.T computed as weight @ flat.T (a fresh contiguous tensor)."""
    rows = flat.shape[0]
    if rows == 1:
        flat = torch.cat([flat, flat])  # a real second row: MKL's GEMM, not its slower matrix-vector path
    return (weight @ flat.T).T[:rows].contiguous()


def pinned_kernel(kernel: str = "auto") -> str:
    """The kernel to use: `kernel` when pinned ("xw", "wx" or per shape as `describe` writes it), else
    AGORA_SKINNY_LINEAR's pin (1 = wx, 0 = xw), else "auto" (time each weight shape)."""
    per_shape(kernel)  # a ValueError naming what is wrong
    forced = os.environ.get("AGORA_SKINNY_LINEAR")
    if kernel == "auto" and forced in ("0", "1"):
        return "wx" if forced == "1" else "xw"
    return kernel


def per_shape(kernel: str) -> dict[str, str] | None:
    """A per-shape pin as `describe` writes it ("wx: 49152x576; xw: 576x576, 64x576") as {shape: kernel};
    None for "auto", "xw" and "wx" (shapes it does not name use "xw")."""
    if kernel in KERNELS:
        return None
    out: dict[str, str] = {}
    for part in kernel.split(";"):
        name, _, shapes = part.partition(":")
        if name.strip() not in ("xw", "wx") or not shapes.strip():
            raise ValueError(
                f"linear kernel {kernel[:80]!r}: expected one of {', '.join(KERNELS)}, or per weight shape as a run "
                "records it (tag agora.kernel), e.g. 'wx: 49152x576; xw: 576x576'"
            )
        for shape in shapes.split(","):
            if not re.fullmatch(r"\d+x\d+", shape.strip()):
                raise ValueError(
                    f"linear kernel {kernel[:80]!r}: {shape.strip()[:20]!r} is not a weight shape like 576x576"
                )
            out[shape.strip()] = name.strip()
    return out


def skinny_is_faster(weight: torch.Tensor) -> bool:
    """Whether W @ x.T beats x @ W.T by 10% for 1, 3 and 8 rows on `weight` (best of three; timed
    once per shape: ~10 calls of each form, since every shape of a model is timed at its load)."""
    forced = pinned_kernel()
    if forced != "auto":
        return forced == "wx"
    key = tuple(weight.shape)
    if key not in _verdicts:
        xs = [torch.randn(rows, weight.shape[1], generator=torch.Generator().manual_seed(rows)) for rows in (1, 3, 8)]
        best = {}
        with torch.inference_mode():
            for name, product in (
                ("linear", lambda x: torch.nn.functional.linear(x, weight)),
                ("skinny", lambda x: skinny_product(weight, x)),
            ):
                product(xs[0])  # warm-up
                times = []
                for _ in range(3):
                    start = time.perf_counter()
                    for x in xs:
                        product(x)
                    times.append(time.perf_counter() - start)
                best[name] = min(times)
        _verdicts[key] = best["skinny"] < 0.9 * best["linear"]
    return _verdicts[key]


def use_skinny_linears(model: torch.nn.Module, kernel: str = "auto") -> torch.nn.Module:
    """Set the kernel of every linear layer of a CPU float32 `model` in place: SkinnyLinear (W @ x.T)
    or nn.Linear (x @ W.T), per weight shape by timing ("auto") or all alike ("wx", "xw"; see
    `pinned_kernel`). Same parameters and state dict either way; peft still sees nn.Linear. Returns it."""
    kernel = pinned_kernel(kernel)
    linears = [m for m in model.modules() if type(m) in (torch.nn.Linear, SkinnyLinear)]
    if not linears or linears[0].weight.device.type != "cpu" or linears[0].weight.dtype != torch.float32:
        return model
    pins = per_shape(kernel)
    for module in linears:
        shape = "x".join(map(str, module.weight.shape))
        skinny = (
            pins.get(shape) == "wx"
            if pins is not None
            else kernel == "wx" or (kernel == "auto" and skinny_is_faster(module.weight.detach()))
        )
        module.__class__ = SkinnyLinear if skinny else torch.nn.Linear
    return model


def choices(model: torch.nn.Module) -> dict[str, str]:
    """The kernel each weight shape of `model` uses, {"out x in": "wx" | "xw"} ("mixed" when layers
    of one shape differ): what a run records so that its logprobs can be reproduced exactly."""
    out: dict[str, str] = {}
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            shape = "x".join(map(str, module.weight.shape))
            kernel = "wx" if type(module) is SkinnyLinear else "xw"
            out[shape] = kernel if out.get(shape, kernel) == kernel else "mixed"
    return out


def describe(model: torch.nn.Module) -> str:
    """`choices` in one line: "wx" or "xw" when every layer agrees, else e.g. "wx: 576x576, 49152x576; xw: 64x576"."""
    by_kernel: dict[str, list[str]] = {}
    for shape, kernel in choices(model).items():
        by_kernel.setdefault(kernel, []).append(shape)
    if len(by_kernel) <= 1:
        return next(iter(by_kernel), "xw")
    return "; ".join(f"{kernel}: {', '.join(shapes)}" for kernel, shapes in sorted(by_kernel.items()))
