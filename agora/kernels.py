"""Faster CPU matrix products for inference with few rows (decode steps, short prefills).

`nn.Linear` computes x @ W.T. With MKL on this project's AMD EPYC machine that product runs
far below memory bandwidth when x has few rows: 1 row goes through a matrix-vector path and 2-3
rows are done as that many matrix-vector products, each reading all of W again. The same product
written W @ x.T, with a single row doubled, runs as one bandwidth-bound GEMM. Measured there on
SmolLM2-135M's 49152 x 576 LM head: 9.8 ms -> 3.0 ms at 1-2 rows, 34 -> 4.0 ms at 3 rows,
16 -> 6.8 ms at 8 rows; a whole decode step: 56 -> 35 ms at batch 1, 108 -> 75 ms at batch 8.
Results agree with x @ W.T to float rounding (|diff| <= 4e-5 on unit-scale inputs).

Only inference with at most MAX_ROWS rows uses it (grad disabled, float32, CPU): from ~64 rows
up (prefills, training) x @ W.T is as fast or faster, and training keeps PyTorch's own kernels.
"""

from __future__ import annotations

import torch

MAX_ROWS = 32


class SkinnyLinear(torch.nn.Linear):
    """An nn.Linear whose no-grad CPU float32 forward is W @ x.T (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if torch.is_grad_enabled() or weight.device.type != "cpu" or weight.dtype != torch.float32 or x.dtype != torch.float32:
            return super().forward(x)
        flat = x.reshape(-1, x.shape[-1])
        rows = flat.shape[0]
        if rows > MAX_ROWS:
            return super().forward(x)
        if rows == 1:
            flat = flat.repeat(2, 1)  # a real second row: MKL's GEMM, not its slower matrix-vector path
        out = (weight @ flat.T).T[:rows].contiguous()
        if self.bias is not None:
            out += self.bias
        return out.view(*x.shape[:-1], weight.shape[0])


def use_skinny_linears(model: torch.nn.Module) -> torch.nn.Module:
    """Switch every plain nn.Linear of `model` to SkinnyLinear in place (same parameters, same
    state dict; peft still sees nn.Linear). Returns the model."""
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.__class__ = SkinnyLinear
    return model
