"""GRPO update throughput: repeated prefix vs shared prefix (Prefix Grouper, arXiv 2506.05433).

One group of G completions of one long prompt, the usual GRPO shape. Both sides compute the same
clipped policy-gradient loss and its backward pass through LoRA adapters:

- repeated: G rows [P; R_i], the prompt forwarded G times;
- shared:   the prompt forwarded once (batch 1) into a KV cache, repeated over the G rows (the
            gradient flows back through the repeat), then the G completions attend to it.

It checks that per-token logprobs and the LoRA gradients agree within tolerance, then prints the
training tokens/s of both (G * (P + C) tokens per update) and their ratio. Runs on CPU.
Fairness: each side has one untimed warm-up update first; the timed updates then alternate
between the sides (the order rotated every repeat) and the median per side counts.

    python bench/train.py                       # SmolLM2-135M's architecture, 4 layers, random weights
    python bench/train.py --layers 0            # the embedded model itself, all 30 layers (slow on CPU)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import format_repeats, median, side_orders  # noqa: E402


def build_model(layers: int, seed: int):
    from peft import LoraConfig
    from transformers import AutoConfig, AutoModelForCausalLM

    from agora.lora import peft_model
    from agora.models import prepare_embedded, quiet_transformers

    quiet_transformers()
    path = prepare_embedded()
    torch.manual_seed(seed)
    if layers:
        config = AutoConfig.from_pretrained(path)
        config.num_hidden_layers = layers
        base = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    else:
        base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )
    model = peft_model(base, lora)
    for name, p in model.named_parameters():  # B = 0 at init would make every LoRA-A gradient zero
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    return model, base.config.vocab_size


def update(model, prompt, completions, old, advantages, *, share_prefix: bool):
    """One GRPO loss forward + backward; returns (token logprobs, LoRA gradients)."""
    from agora.scoring import sequence_logprobs
    from trainers.grpo import aggregate, clipped_pg_loss

    model.zero_grad(set_to_none=True)
    logp, _, mask, _ = sequence_logprobs(
        model, [prompt] * len(completions), completions, temperature=1.0, pad_id=0, share_prefix=share_prefix
    )
    per_token, _ = clipped_pg_loss(logp, old, advantages, mask.float(), epsilon=0.2)
    loss = aggregate(per_token, mask.float(), "token", tokens=int(mask.sum()), sequences=len(completions))
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return logp.detach(), grads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", type=int, default=1024, help="shared prompt tokens")
    parser.add_argument("--completion", type=int, default=64, help="tokens per completion")
    parser.add_argument("--group", type=int, default=8, help="G, completions per prompt")
    parser.add_argument(
        "--layers",
        type=int,
        default=4,
        help="decoder layers of a randomly initialised SmolLM2-135M (0: the real model)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed updates per side (after one warm-up each), interleaved"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, vocab = build_model(args.layers, seed=0)
    model.train()
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(10, vocab, (args.prompt,), generator=g).tolist()
    completions = [torch.randint(10, vocab, (args.completion,), generator=g).tolist() for _ in range(args.group)]
    advantages = torch.randn(args.group, generator=g)
    with torch.no_grad():
        from agora.scoring import sequence_logprobs

        old, _, _, _ = sequence_logprobs(
            model, [prompt] * args.group, completions, temperature=1.0, pad_id=0, share_prefix=False
        )

    sides = {"repeated prefix": False, "shared prefix": True}
    checked = {  # one warm-up update per side, before any timing; its values are the ones compared
        name: update(model, prompt, completions, old, advantages, share_prefix=share) for name, share in sides.items()
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    for order in side_orders(list(sides), args.repeats):  # interleaved, the order rotated per repeat
        for name in order:
            start = time.perf_counter()
            update(model, prompt, completions, old, advantages, share_prefix=sides[name])
            times[name].append(time.perf_counter() - start)
    results = {name: (median(times[name]), *checked[name]) for name in sides}

    (t_rep, logp_rep, g_rep), (t_sh, logp_sh, g_sh) = results["repeated prefix"], results["shared prefix"]
    logp_diff = float((logp_rep - logp_sh).abs().max())
    grad_rel = max(float((g_rep[k] - g_sh[k]).norm() / (g_rep[k].norm() + 1e-12)) for k in g_rep)
    ok = logp_diff < 1e-3 and grad_rel < 1e-3
    tokens = args.group * (args.prompt + args.completion)
    layers = args.layers or model.config.num_hidden_layers
    print(
        f"GRPO update, G={args.group}, prompt {args.prompt} + completion {args.completion} tokens, SmolLM2-135M "
        f"architecture with {layers} layers, LoRA r=8, fp32, {torch.get_num_threads()} threads"
    )
    print(f"repeated prefix: {t_rep:.3f} s/update  {tokens / t_rep:,.0f} training tokens/s")
    print(f"shared prefix:   {t_sh:.3f} s/update  {tokens / t_sh:,.0f} training tokens/s")
    for name, seconds in times.items():
        print(f"  {name} s/update per repeat: {format_repeats(seconds, 3)}")
    print(
        f"max |logprob difference| {logp_diff:.2e}, max relative LoRA-gradient difference {grad_rel:.2e}: "
        f"{'equal within tolerance' if ok else 'NOT EQUAL'}"
    )
    print(f"speed-up (shared / repeated): {t_rep / t_sh:.2f}x")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
