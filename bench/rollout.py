"""Batched rollout engine vs one generate call per agent turn, on the same negotiation episodes.

Both sides play the same seeds with the same model and greedy decoding in one process; the
sequential side is the plain PettingZoo loop most language-game frameworks use (agent_iter,
one prompt -> one generate -> parse). Prints throughput of every side, their ratio, each side's
prefix-cache hit fraction, and checks that the transcripts are identical. Sequential baselines:

- `generate`: transformers' `model.generate` once per turn (how most frameworks play);
- `agora`: Agora's own sampler once per turn, with its own prefix KV cache (isolates the gain that
  batching across episodes brings on top of everything else).

These sides decode freely (`constrained: false`), as `generate` does, so their transcripts must be
identical. The `constrained` side is the batched engine decoding under the world's reply grammar
(the default for LLM agents): its throughput against the free batched side is the cost of
constrained decoding (llguidance masks), printed as a ratio of tokens/s and of episodes/min, with
both sides' parse-failure rates.

Fairness (bench/harness.py): every side of every repeat gets fresh policies, so its prefix cache
starts empty and fills only from its own episodes (the model's weights are shared); the warm-up
plays `--warmup-episodes` episodes of every side on throw-away policies with a root seed no
measured side plays; repeat r runs the sides in an order rotated by r.

    .venv/bin/python bench/rollout.py [--episodes 16] [--concurrency 8] [--max-new-tokens 48] [--baseline
    generate|agora|both] [--repeats N] [--warmup-episodes 1] [--dtype auto|float32|bfloat16]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agora.policy import ActRequest  # noqa: E402
from agora.rollout import RETRY_MESSAGE, Rollout, episode_seed  # noqa: E402
from agora.run import build_policies  # noqa: E402
from agora.scenario import resolve_scenario  # noqa: E402
from agora.world import ParseError, demonstration  # noqa: E402
from bench.harness import (  # noqa: E402
    PromptTally,
    cache_hit_fraction,
    format_repeats,
    is_cold,
    median,
    model_policies,
    side_orders,
    tally_prompts,
    warmup_seed,
)

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "negotiation.yaml"
BATCHED = "batched"
CONSTRAINED = "constrained"  # the batched engine under the world's reply grammar


@dataclass
class SideResult:
    """One side's run: wall time, generated tokens, prompt tokens (and those from the cache), transcripts."""

    seconds: float
    generated_tokens: int
    tally: PromptTally
    transcripts: list
    parse_failures: int = 0
    text_attempts: int = 0


def hf_generate(policy, request: ActRequest):
    """One plain `model.generate` call (greedy) on the prompt the policy would see: (text, tokens, prompt tokens)."""
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
    return policy.tokenizer.decode(out, skip_special_tokens=True).strip(), len(out), ids.shape[1]


def agora_generate(policy, request: ActRequest):
    """Agora's sampler on one request: (text, tokens, prompt tokens)."""
    response = policy.act([request])[0]
    return response.text, len(response.completion_ids), len(response.prompt_ids)


BASELINES = {"generate": hf_generate, "agora": agora_generate}


def sequential(scenario, policies, episodes: int, max_retries: int, generate, root: int):
    """One generate call per agent turn, episode after episode: (transcripts, generated tokens, prompt tokens)."""
    transcripts, tokens, prompt_tokens = [], 0, 0
    for index in range(episodes):
        seed = episode_seed(root, index)
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
                    action = response.action
                    text = response.text or world.render_action(agent, action)  # as the engine records it
                    break
                text, n, prompt_n = generate(policies[agent], request)
                tokens, prompt_tokens = tokens + n, prompt_tokens + prompt_n
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
            transcript.append((agent, text, world.render_action(agent, action)))
            world.step(action)
        transcripts.append(transcript)
    return transcripts, tokens, prompt_tokens


def fresh_policies(scenario) -> dict:
    """A side's own policies: new objects, so new (empty) prefix caches; the model weights are shared."""
    policies = build_policies(scenario)
    assert is_cold(policies), "a side must start with an empty prefix cache"
    return policies


def batched_side(scenario, episodes: int, concurrency: int, root: int) -> SideResult:
    """The rollout engine on episodes root/0..episodes-1, every pending LLM turn of a tick in one call."""
    policies = fresh_policies(scenario)
    tally = tally_prompts(policies)
    ids = {a: s.entry.name for a, s in scenario.seats.items()}
    rollout = Rollout(
        scenario.make_world,
        policies,
        ids,
        seed=root,
        concurrency=concurrency,
        max_retries=scenario.spec.max_retries,
        record_observations=False,
    )
    start = time.perf_counter()
    played = rollout.run(episodes)
    seconds = time.perf_counter() - start
    world = scenario.make_world()
    transcripts = [[(s.agent, s.text, world.render_action(s.agent, s.action)) for s in e.steps] for e in played]
    return SideResult(
        seconds,
        sum(p.stats.generated_tokens for p in model_policies(policies)),
        tally,
        transcripts,
        sum(c.parse_failures for c in rollout.counters.values()),
        sum(c.text_attempts for c in rollout.counters.values()),
    )


def sequential_side(scenario, episodes: int, root: int, baseline: str) -> SideResult:
    """The plain PettingZoo loop on the same episodes, one `baseline` generate call per turn."""
    policies = fresh_policies(scenario)
    start = time.perf_counter()
    transcripts, tokens, prompt_tokens = sequential(
        scenario, policies, episodes, scenario.spec.max_retries, BASELINES[baseline], root
    )
    seconds = time.perf_counter() - start
    return SideResult(seconds, tokens, PromptTally(prompt_tokens, tuple(model_policies(policies))), transcripts)


def run_side(name: str, scenarios: dict, episodes: int, concurrency: int, root: int) -> SideResult:
    if name in (BATCHED, CONSTRAINED):
        return batched_side(scenarios[name], episodes, concurrency, root)
    return sequential_side(scenarios[BATCHED], episodes, root, name)


def side_label(name: str, concurrency: int) -> str:
    if name == CONSTRAINED:
        return f"batched, constrained (conc. {concurrency})"
    return f"batched (concurrency {concurrency})" if name == BATCHED else f"sequential ({name}, 1 per turn)"


def failure_rate(result: SideResult) -> float:
    return result.parse_failures / max(result.text_attempts, 1)


def compare(scenarios: dict, sides: list[str], episodes: int, concurrency: int, repeats: int, warmup_episodes: int):
    """Warm up every side alike on unmeasured seeds, then run the sides `repeats` times in rotated orders."""
    root = scenarios[BATCHED].spec.seed
    warm = warmup_seed([root])
    measured = {episode_seed(root, i) for i in range(episodes)}
    assert not measured & {episode_seed(warm, i) for i in range(warmup_episodes)}
    for name in sides if warmup_episodes else []:
        run_side(name, scenarios, warmup_episodes, concurrency, warm)
    results: dict[str, list[SideResult]] = {name: [] for name in sides}
    orders = side_orders(sides, repeats)
    for order in orders:
        for name in order:
            results[name].append(run_side(name, scenarios, episodes, concurrency, root))
    return results, orders


def report(results: dict[str, list[SideResult]], orders, args) -> list[str]:
    """Print a row per side (every repeat's seconds, the median) and the ratio to the batched side;
    returns the baselines whose transcripts differ from the batched side's."""
    first = results[BATCHED][0]
    print(
        f"world negotiation, {args.episodes} episodes, greedy, max_new_tokens {args.max_new_tokens}, dtype "
        f"{args.dtype}, LLM parse-failure rate {failure_rate(first):.2f} free"
        + (f", {failure_rate(results[CONSTRAINED][0]):.2f} constrained, " if CONSTRAINED in results else ", ")
        + f"{len(orders)} repeat(s), orders: {' | '.join(', '.join(o) for o in orders)}; fresh policies per side"
    )
    print(
        f"{'':34}{'tokens':>8}{'seconds':>10}{'tokens/s':>10}{'episodes/min':>14}{'cache-hit':>11}"
        f"{'speed-up':>10}{'identical':>11}"
    )
    batched_s = median([r.seconds for r in results[BATCHED]])
    differ = []
    for name, runs in results.items():
        seconds = median([r.seconds for r in runs])
        hits = np.mean([cache_hit_fraction(r.tally) for r in runs])
        same = min(sum(a == b for a, b in zip(first.transcripts, r.transcripts)) for r in runs)
        ratio = "" if name in (BATCHED, CONSTRAINED) else f"{seconds / batched_s:>9.2f}x"
        identical = f"{'n/a':>11}" if name == CONSTRAINED else f"{same:>8}/{args.episodes}"
        print(
            f"{side_label(name, args.concurrency):34}{runs[0].generated_tokens:>8}{seconds:>10.1f}"
            f"{runs[0].generated_tokens / seconds:>10.1f}{60 * args.episodes / seconds:>14.2f}{hits:>11.3f}"
            f"{ratio:>10}{identical}"
        )
        differ += [name] if same != args.episodes and name != CONSTRAINED else []
    for name, runs in results.items():
        print(f"  {name} seconds per repeat: {format_repeats([r.seconds for r in runs])}")
    for name in results:
        if name not in (BATCHED, CONSTRAINED):
            ratio = median([r.seconds for r in results[name]]) / batched_s
            print(f"ratio sequential ({name}) / batched time: {ratio:.2f}x")
    if CONSTRAINED in results:
        free, constrained = results[BATCHED], results[CONSTRAINED]
        per_s = [r.generated_tokens / r.seconds for r in constrained], [r.generated_tokens / r.seconds for r in free]
        print(
            f"ratio constrained / free throughput: {median(per_s[0]) / median(per_s[1]):.2f}x tokens/s, "
            f"{batched_s / median([r.seconds for r in constrained]):.2f}x episodes/min"
        )
    return differ


def scenario_of(args, *, constrained: bool):
    """The scenario file with its LLM seats greedy at the bench's settings, decoding freely or not."""
    data = yaml.safe_load(args.scenario.read_text())
    for spec in data["agents"].values():
        if spec["policy"] == "llm":
            spec.update(temperature=0.0, max_new_tokens=args.max_new_tokens, dtype=args.dtype, constrained=constrained)
            if args.model:
                spec["model"] = args.model
    data.update(episodes=args.episodes, concurrency=args.concurrency)
    return resolve_scenario(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--scenario", type=Path, default=SCENARIO)
    parser.add_argument("--model", default=None, help="the LLM seats' model (default: the scenario's)")
    parser.add_argument("--baseline", choices=[*BASELINES, "both", "none"], default="generate")
    parser.add_argument(
        "--constrained",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the batched engine under the world's reply grammar (the constrained column)",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="runs of every side, in rotated orders (default: one per side)"
    )
    parser.add_argument(
        "--warmup-episodes", type=int, default=1, help="unmeasured episodes per side first, on other seeds (0: none)"
    )
    parser.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        default="auto",
        help="the model's dtype, both sides",
    )
    args = parser.parse_args()

    scenarios = {BATCHED: scenario_of(args, constrained=False), CONSTRAINED: scenario_of(args, constrained=True)}
    baselines = {"both": list(BASELINES), "none": []}.get(args.baseline, [args.baseline])
    sides = [BATCHED, *([CONSTRAINED] if args.constrained else []), *baselines]
    results, orders = compare(
        scenarios, sides, args.episodes, args.concurrency, args.repeats or len(sides), args.warmup_episodes
    )
    differ = report(results, orders, args)
    if differ:
        raise SystemExit(f"transcripts differ between batched and sequential play ({', '.join(differ)})")


if __name__ == "__main__":
    main()
