"""Regret growth of an LLM on online learning before and after regret-loss training, against Hedge, FTL and uniform
play ("Do LLM Agents Have Regret? A Case Study in Online Learning and Games", arXiv 2403.16843).

A no-regret learner's Reg_T grows sublinearly in T (Hedge: about √T); a learner that ignores the losses grows
linearly. For each T of --rounds the same --episodes loss sequences (seeds) are played by `hedge`, `ftl`, `uniform`,
`llm` (the base model) and, with --adapter, `trained` (the base model with a LoRA adapter folder, e.g. a regret-loss
campaign's checkpoints/online-regret/iter-000005/adapter). Prints mean Reg_T and Reg_T / T per player and T, and
each player's growth exponent: the slope of log mean Reg_T against log T (1: linear, 0.5: like √T); means carry
Student-t 95% intervals over the loss sequences, and trained - llm is paired by sequence.

    .venv/bin/python bench/regret_growth.py --adapter checkpoints/online-regret/iter-000005/adapter \\
        --rounds 10 20 40 --episodes 8 --n-actions 2 --grid 10 --sequence gaussian
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.llm import LLMConfig, LLMPolicy  # noqa: E402
from agents.scripted.online_learning import FollowTheLeader, Hedge, Uniform  # noqa: E402
from agora.policy import Policy  # noqa: E402
from agora.rollout import Rollout  # noqa: E402
from bench.learning.common import t_interval  # noqa: E402
from worlds.online_learning import raw_env  # noqa: E402


def players(model: str, adapter: str | None, *, temperature: float, max_new_tokens: int) -> dict[str, Policy]:
    """The scripted baselines, the base LLM and (with `adapter`) the LLM with that LoRA adapter."""
    config = LLMConfig(model=model, temperature=temperature, max_new_tokens=max_new_tokens)
    out: dict[str, Policy] = {
        "hedge": Hedge(Hedge.Config(), seed=0),
        "ftl": FollowTheLeader(FollowTheLeader.Config(), seed=0),
        "uniform": Uniform(Uniform.Config(), seed=0),
        "llm": LLMPolicy(config, seed=0),
    }
    if adapter:
        from agora.lora import load_trained

        trained, tokenizer = load_trained(model, adapter)
        out["trained"] = LLMPolicy(config, seed=0, model=trained, tokenizer=tokenizer)
    return out


def episode_regrets(policy: Policy, rounds: int, episodes: int, world: dict, seed: int) -> list[float]:
    """Reg_T of each of `episodes` loss sequences of `rounds` rounds (the same sequences for every policy)."""
    rollout = Rollout(
        lambda: raw_env(rounds=rounds, **world), {"learner": policy}, {"learner": "learner"}, seed=seed, max_retries=1
    )
    return [float(e.metrics["regret"]) for e in rollout.run(episodes)]


def growth_exponent(rounds: list[int], regrets: list[float]) -> float:
    """The slope of log Reg_T against log T (nan when a mean regret is not positive)."""
    if len(rounds) < 2 or min(regrets) <= 0:
        return float("nan")
    return float(np.polyfit(np.log(rounds), np.log(regrets), 1)[0])


def measure(
    policies: dict[str, Policy], rounds: list[int], episodes: int, world: dict, seed: int = 0
) -> dict[str, list[list[float]]]:
    """name -> for each T of `rounds`, Reg_T of every loss sequence."""
    return {name: [episode_regrets(p, T, episodes, world, seed) for T in rounds] for name, p in policies.items()}


def main(argv: list[str] | None = None) -> dict[str, list[list[float]]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--adapter", default=None, help="a LoRA adapter folder (a checkpoint's adapter/)")
    parser.add_argument("--rounds", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--n-actions", type=int, default=2)
    parser.add_argument("--grid", type=int, default=10)
    parser.add_argument("--sequence", default="gaussian")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    world = {"n_actions": args.n_actions, "grid": args.grid, "sequence": args.sequence}
    policies = players(args.model, args.adapter, temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    result = measure(policies, args.rounds, args.episodes, world, args.seed)
    for name, per_t in result.items():
        means = [float(np.mean(r)) for r in per_t]
        cells = " | ".join(
            "T={}: Reg_T {:.3f} [{:.3f}, {:.3f}] (/T {:.4f})".format(T, *t_interval(r), m / T)
            for T, r, m in zip(args.rounds, per_t, means)
        )
        print(f"{name:8s} {cells} | growth exponent {growth_exponent(args.rounds, means):.2f}")
    if "trained" in result:  # the same loss sequences: paired by sequence
        cells = " | ".join(
            "T={}: {:+.3f} [{:+.3f}, {:+.3f}]".format(T, *t_interval([a - b for a, b in zip(x, y)]))
            for T, x, y in zip(args.rounds, result["trained"], result["llm"])
        )
        print(f"trained - llm, paired by loss sequence: {cells}")
    return result


if __name__ == "__main__":
    main()
