"""Batched rollout engine vs one generate call per agent turn, on the same negotiation episodes.

Both sides play the same seeds with the same model and greedy decoding in one process; the
sequential side is the plain PettingZoo loop most language-game frameworks use (agent_iter,
one prompt -> one generate -> parse). Prints throughput of both, their ratio, and checks that
the transcripts are identical. Sequential baselines:

- `generate`: transformers' `model.generate` once per turn (how most frameworks play);
- `agora`: Agora's own sampler once per turn, with its prefix KV cache (isolates the gain that
  batching across episodes brings on top of everything else).

    .venv/bin/python bench/rollout.py [--episodes 16] [--concurrency 8] [--max-new-tokens 48] [--baseline
    generate|agora|both] [--dtype auto|float32|bfloat16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agora.policy import ActRequest  # noqa: E402
from agora.rollout import RETRY_MESSAGE, Rollout, episode_seed  # noqa: E402
from agora.run import build_policies  # noqa: E402
from agora.scenario import resolve_scenario  # noqa: E402
from agora.world import ParseError, demonstration  # noqa: E402

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "negotiation.yaml"


def hf_generate(policy, request: ActRequest):
    """One plain `model.generate` call (greedy) on the prompt the policy would see: (text, tokens)."""
    import torch

    text = policy.render(request.messages, request.demonstration)
    ids = torch.tensor([policy.tokenizer(text, add_special_tokens=False)["input_ids"]], device=policy.device)
    out = policy.model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=policy.config.max_new_tokens,
        eos_token_id=sorted(policy.stop_ids),
        pad_token_id=policy.tokenizer.pad_token_id,
    )[0, ids.shape[1] :].tolist()
    return policy.tokenizer.decode(out, skip_special_tokens=True).strip(), len(out)


def agora_generate(policy, request: ActRequest):
    response = policy.act([request])[0]
    return response.text, len(response.completion_ids)


BASELINES = {"generate": hf_generate, "agora": agora_generate}


def sequential(scenario, policies, episodes: int, max_retries: int, generate):
    """One generate call per agent turn, episode after episode."""
    transcripts, tokens = [], 0
    for index in range(episodes):
        seed = episode_seed(scenario.spec.seed, index)
        world = scenario.make_world()
        world.reset(seed=seed)
        rng = np.random.default_rng(seed)
        transcript = []
        for agent in world.agent_iter():
            obs, _, termination, truncation, _ = world.last()
            if termination or truncation:
                world.step(None)
                continue
            messages = [{"role": "user", "content": world.prompt(agent, obs)}]
            for attempt in range(max_retries + 1):
                request = ActRequest(
                    index, agent, obs, messages, world.action_space(agent), demonstration(world, agent)
                )
                if not policies[agent].expensive:  # scripted seat: acts on the observation
                    response = policies[agent].act([request])[0]
                    action, text = response.action, response.text
                    break
                text, n = generate(policies[agent], request)
                tokens += n
                try:
                    action = world.parse(agent, text)
                    break
                except ParseError as error:
                    messages = [
                        *messages,
                        {"role": "assistant", "content": text},
                        {"role": "user", "content": RETRY_MESSAGE.format(error=error)},
                    ]
            else:
                action = world.fallback_action(agent, rng)
            text = text or world.render_action(agent, action)
            transcript.append((agent, text, world.render_action(agent, action)))
            world.step(action)
        transcripts.append(transcript)
    return transcripts, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--scenario", type=Path, default=SCENARIO)
    parser.add_argument("--baseline", choices=[*BASELINES, "both"], default="generate")
    parser.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        default="auto",
        help="the model's dtype, both sides",
    )
    args = parser.parse_args()

    data = yaml.safe_load(args.scenario.read_text())
    for spec in data["agents"].values():
        if spec["policy"] == "llm":
            spec.update(temperature=0.0, max_new_tokens=args.max_new_tokens, dtype=args.dtype)
    data.update(episodes=args.episodes, concurrency=args.concurrency)
    scenario = resolve_scenario(data)
    policies = build_policies(scenario)
    unique = list({id(p): p for p in policies.values()}.values())
    ids = {a: s.entry.name for a, s in scenario.seats.items()}
    next(p for p in unique if p.expensive).act([ActRequest(0, "warmup", None, [{"role": "user", "content": "Hi"}])])

    before = sum(p.stats.generated_tokens for p in unique)
    rollout = Rollout(
        scenario.make_world,
        policies,
        ids,
        seed=scenario.spec.seed,
        concurrency=args.concurrency,
        max_retries=scenario.spec.max_retries,
        record_observations=False,
    )
    start = time.perf_counter()
    episodes = rollout.run(args.episodes)
    batched_s = time.perf_counter() - start
    batched_tokens = sum(p.stats.generated_tokens for p in unique) - before
    world = scenario.make_world()
    batched = [[(s.agent, s.text, world.render_action(s.agent, s.action)) for s in e.steps] for e in episodes]

    failures = sum(c.parse_failures for c in rollout.counters.values())
    attempts = sum(c.text_attempts for c in rollout.counters.values())
    print(
        f"world {scenario.world_entry.name}, {args.episodes} episodes, greedy, max_new_tokens "
        f"{args.max_new_tokens}, dtype {args.dtype}, "
        f"LLM parse-failure rate {failures / max(attempts, 1):.2f}"
    )
    print(f"{'':34}{'tokens':>8}{'seconds':>10}{'tokens/s':>10}{'episodes/min':>14}{'speed-up':>10}{'identical':>11}")

    def row(name, tokens, seconds):
        return f"{name:34}{tokens:>8}{seconds:>10.1f}{tokens / seconds:>10.1f}{60 * args.episodes / seconds:>14.2f}"

    print(row(f"batched (concurrency {args.concurrency})", batched_tokens, batched_s), flush=True)
    differ = []
    for name in BASELINES if args.baseline == "both" else [args.baseline]:
        start = time.perf_counter()
        seq, seq_tokens = sequential(scenario, policies, args.episodes, scenario.spec.max_retries, BASELINES[name])
        seq_s = time.perf_counter() - start
        same = sum(a == b for a, b in zip(batched, seq))
        print(
            row(f"sequential ({name}, 1 per turn)", seq_tokens, seq_s)
            + f"{seq_s / batched_s:>9.2f}x{same:>8}/{args.episodes}",
            flush=True,
        )
        differ += [name] if same != args.episodes else []
    if differ:
        raise SystemExit(f"transcripts differ between batched and sequential play ({', '.join(differ)})")


if __name__ == "__main__":
    main()
