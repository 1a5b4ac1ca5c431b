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
Other CPUs and BLAS libraries may not share MKL's weakness, so `use_skinny_linears` first times
both forms on the model's largest weight and switches only where W @ x.T wins
(AGORA_SKINNY_LINEAR=1 or 0 forces the choice).
"""

from __future__ import annotations

import os
import time

import torch

MAX_ROWS = 32
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


def skinny_is_faster(weight: torch.Tensor) -> bool:
    """Whether W @ x.T beats x @ W.T for 1, 3 and 8 rows on `weight` (timed once per shape)."""
    forced = os.environ.get("AGORA_SKINNY_LINEAR")
    if forced in ("0", "1"):
        return forced == "1"
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


def use_skinny_linears(model: torch.nn.Module) -> torch.nn.Module:
    """Switch every plain nn.Linear of a CPU float32 `model` to SkinnyLinear in place (same
    parameters, same state dict; peft still sees nn.Linear) when that is faster here. Returns it."""
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear]
    if not linears or linears[0].weight.device.type != "cpu" or linears[0].weight.dtype != torch.float32:
        return model
    largest = max(linears, key=lambda m: m.weight.numel()).weight.detach()
    if skinny_is_faster(largest):
        for module in linears:
            module.__class__ = SkinnyLinear
    return model
