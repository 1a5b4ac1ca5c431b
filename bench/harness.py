"""What keeps a benchmark's comparison fair; shared by the scripts in `bench/`.

A side is one way of doing the same work (batched vs one call per turn, N = 4 vs N = 32, ...).
Each side must start from the same state, so that the ratio measures the method and not the order:

- fresh policies per side (`build_policies` again): a new LLM policy has an empty prefix cache
  (`agora.engine.PrefixCache` lives on the policy). The model object itself may be shared: the
  process-wide cache in `agora.models` holds weights and tokenizers only, never prompts or KV;
- warm-ups (imports, first kernels, allocator) run on throw-away policies, the same for every
  side, and play seeds that no measured side plays (`warmup_seed`);
- the sides run in a rotated order, one rotation per repeat (`side_orders`), so none always runs
  first or last on a machine whose load drifts, and every repeat of every side is printed;
- each side prints the fraction of its prompt tokens served from the prefix cache
  (`cache_hit_fraction`), so a warm cache shows in the output instead of in the speed-up.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass


def unique_policies(policies: dict) -> list:
    """The distinct policy objects of a seat -> policy map (seats with identical specs share one)."""
    return list({id(p): p for p in policies.values()}.values())


def model_policies(policies: dict) -> list:
    """The distinct model-backed (expensive) policies of a seat -> policy map."""
    return [p for p in unique_policies(policies) if p.expensive]


@dataclass
class PromptTally:
    """Prompt tokens a side's LLM policies were given, and how many of them came from their prefix caches."""

    prompt_tokens: int = 0
    policies: tuple = ()

    @property
    def reused_tokens(self) -> int:
        return sum(p.prefix_cache.reused_tokens for p in self.policies if getattr(p, "prefix_cache", None))

    @property
    def cache_hits(self) -> int:
        return sum(p.prefix_cache.hits for p in self.policies if getattr(p, "prefix_cache", None))


def tally_prompts(policies: dict) -> PromptTally:
    """Count the prompt tokens every model-backed policy of `policies` is given from now on.

    The count wraps each policy object's `act` (this process only, a benchmark's own policies);
    a policy's prefix cache counts the tokens it served, so the two give the hit fraction."""
    tally = PromptTally(policies=tuple(model_policies(policies)))
    for policy in tally.policies:
        act = policy.act

        def counted(requests, act=act):
            responses = act(requests)
            tally.prompt_tokens += sum(len(r.prompt_ids or ()) for r in responses)
            return responses

        policy.act = counted
    return tally


def cache_hit_fraction(tally: PromptTally) -> float:
    """Share of a side's prompt tokens taken from its prefix cache instead of computed (0 when it had none)."""
    return tally.reused_tokens / tally.prompt_tokens if tally.prompt_tokens else 0.0


def is_cold(policies: dict) -> bool:
    """Whether no model-backed policy of `policies` holds any cached prompt yet (a side's starting state)."""
    return all(
        p.prefix_cache is None or (not p.prefix_cache.entries and not p.prefix_cache.reused_tokens)
        for p in model_policies(policies)
        if hasattr(p, "prefix_cache")
    )


def side_orders(sides: list[str], repeats: int) -> list[list[str]]:
    """The order of the sides in each repeat: repeat r starts with side r mod k (a rotation), so with
    `repeats` a multiple of k every side runs first, and last, equally often."""
    k = len(sides)
    return [sides[r % k :] + sides[: r % k] for r in range(repeats)]


def warmup_seed(measured: Iterable[int]) -> int:
    """A root seed that no measured side uses: one above the largest measured one."""
    return max(measured) + 1


def median(values: list[float]) -> float:
    return statistics.median(values)


def format_repeats(seconds: list[float], digits: int = 1) -> str:
    """`12.3 / 12.1 (median 12.2)` for a side's repeats; just the value for one."""
    if len(seconds) == 1:
        return f"{seconds[0]:.{digits}f}"
    return " / ".join(f"{s:.{digits}f}" for s in seconds) + f" (median {median(seconds):.{digits}f})"
