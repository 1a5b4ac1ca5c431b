"""The same file and seed give the same transcripts at any `concurrency`.

Every request carries its own seed (`agora.rollout.decision_seed`), so how the engine batches
episodes changes nothing a policy draws. On main the scripted matrix and deferral scenarios
differed in most transcript rows between concurrency levels, and LLM samples did too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agents.llm import LLMPolicy
from agents.scripted.matrix import MixedStrategy
from agora.engine import sample
from agora.policy import ActRequest, ActResponse, Policy
from agora.rollout import GroupRollout, Rollout, decision_seed, episode_root, seat_key
from agora.run import run_scenario
from agora.scenario import load_scenario, resolve_scenario
from worlds.matrix import parallel_env

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def transcripts(episodes) -> list[tuple[int, list[tuple]]]:
    """Per episode: every step's (agent, text, action), the rows a transcript records."""
    return [(e.index, [(s.agent, s.text, repr(s.action)) for s in e.steps]) for e in episodes]


@pytest.mark.parametrize(
    "file,episodes", [("matrix_scripted.yaml", 12), ("deferral_scripted.yaml", 24)], ids=["matrix", "deferral"]
)
def test_scripted_scenarios_play_the_same_at_any_concurrency(file, episodes):
    def play(concurrency: int):
        scenario = load_scenario(SCENARIOS / file, {"episodes": episodes, "concurrency": concurrency})
        return transcripts(run_scenario(scenario, track=False).episodes)

    one = play(1)
    assert play(3) == one and play(8) == one
    assert len({str(steps) for _, steps in one}) > episodes // 2  # the episodes themselves differ


class Recorder(Policy):
    """Plays rock and remembers every request (its seed included); replies garbage on a first attempt."""

    uses_text = True

    def __init__(self, garbage_first: bool = False):
        super().__init__(Policy.Config(), seed=5)
        self.seen: list[ActRequest] = []
        self.garbage_first = garbage_first

    def act(self, requests):
        self.seen.extend(requests)
        return [ActResponse("??" if self.garbage_first and len(r.messages) == 1 else "ACTION: rock") for r in requests]


def test_each_decision_and_attempt_gets_its_own_seed_whatever_the_batching():
    def seeds(concurrency: int) -> dict[tuple, int]:
        policy = Recorder(garbage_first=True)
        seats = {"player_0": policy, "player_1": policy}
        Rollout(lambda: parallel_env(rounds=3), seats, {a: "r" for a in seats}, seed=9, concurrency=concurrency).run(4)
        return {(r.episode, r.agent, int(r.observation["round"]), len(r.messages)): r.seed for r in policy.seen}

    one = seeds(1)
    assert len(one) == 4 * 2 * 3 * 2  # episodes x seats x rounds x attempts (a retry after each garbage reply)
    assert len(set(one.values())) == len(one)  # no two requests share randomness
    assert seeds(4) == one
    key = seat_key(episode_root(9, 0, 0), 5, "a")
    assert len({key, seat_key(episode_root(9, 0, 1), 5, "a"), seat_key(episode_root(9, 0, 0), 6, "a")}) == 3
    assert len({decision_seed(key, d, a) for d in range(50) for a in range(4)}) == 200


def test_a_rows_sample_does_not_depend_on_the_rest_of_its_batch(tiny_model_dir):
    from agora.models import load_causal_lm

    model, _ = load_causal_lm(tiny_model_dir)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, model.config.vocab_size, (n,), generator=g).tolist() for n in (5, 9, 7)]
    kwargs = dict(max_new_tokens=6, temperature=1.0, top_p=0.9, stop_ids=set(), pad_id=0)

    def seeded(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    batch = sample(model, prompts, generators=seeded(1, 2, 3), **kwargs)
    alone = [sample(model, [p], generators=seeded(s), **kwargs)[0] for p, s in zip(prompts, (1, 2, 3))]
    assert [t for t, _ in batch] == [t for t, _ in alone]
    reordered = sample(model, prompts[::-1], generators=seeded(3, 2, 1), **kwargs)
    assert [t for t, _ in reordered] == [t for t, _ in batch][::-1]
    with pytest.raises(ValueError, match="one generator per prompt"):
        sample(model, prompts, **kwargs)


def llm_scenario(model: str, concurrency: int) -> dict:
    return {
        "name": "determinism",
        "world": {"id": "matrix", "game": "rock_paper_scissors", "rounds": 2},
        "agents": {
            "player_0": {
                "policy": "llm",
                "model": model,
                "temperature": 1.0,
                "max_new_tokens": 4,
                "demonstrations": False,
            },
            "player_1": {"policy": "mixed"},
        },
        "episodes": 4,
        "seed": 3,
        "concurrency": concurrency,
        "max_retries": 1,
    }


def test_llm_runs_sample_the_same_tokens_at_any_concurrency(tiny_model_dir):
    """Batched forward passes of different compositions may differ by float noise; on the tiny model
    the sampled tokens agree exactly (the logprobs to float rounding)."""

    def play(concurrency: int):
        return run_scenario(resolve_scenario(llm_scenario(tiny_model_dir, concurrency)), track=False).episodes

    one, four = play(1), play(4)
    assert transcripts(four) == transcripts(one)
    steps = [(a, b) for e, f in zip(one, four) for a, b in zip(e.steps, f.steps) if a.completion_ids]
    assert steps and all(a.completion_ids == b.completion_ids for a, b in steps)
    assert all(torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4) for a, b in steps)
    assert len({tuple(a.completion_ids) for a, _ in steps}) > 1  # it does sample


def test_group_rollout_episodes_share_a_start_but_differ_by_sampling(tiny_model_dir):
    config = LLMPolicy.Config(model=tiny_model_dir, temperature=1.0, max_new_tokens=4, demonstrations=False)
    llm = LLMPolicy(config, seed=1)
    mixed = MixedStrategy(MixedStrategy.Config(), seed=2)
    seats = {"player_0": llm, "player_1": mixed}
    rollout = GroupRollout(
        lambda: parallel_env(rounds=2), seats, {"player_0": "llm", "player_1": "mixed"}, seeds=[7, 8], group_size=3
    )
    episodes = rollout.run(6)
    assert [e.seed for e in episodes] == [7] * 3 + [8] * 3
    for group in (episodes[:3], episodes[3:]):
        texts = {tuple(s.text for s in e.steps if s.agent == "player_0") for e in group}
        actions = {tuple(s.action for s in e.steps if s.agent == "player_1") for e in group}
        assert len(texts) == 3 and len(actions) > 1


def test_a_checkpoint_holding_a_generator_policies_no_longer_have_still_resumes():
    """Checkpoints written before requests carried seeds hold the LLM policy's `generator`: skipped."""
    from agora.checkpoint import generator_states, restore_generators

    policy = MixedStrategy(MixedStrategy.Config(), seed=4)
    states = {**generator_states({"s": policy}), "s.generator": ("torch", torch.Generator().get_state())}
    policy.rng.random()
    restore_generators({"s": policy}, states)
    assert policy.rng.random() == MixedStrategy(MixedStrategy.Config(), seed=4).rng.random()
