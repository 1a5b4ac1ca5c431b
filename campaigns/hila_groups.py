"""HILA's inner loop: groups of every candidate decision at one (problem, round, agent) state, their realized
rewards, and the GRPO samples scored by the learner ("Adaptive Collaboration with Humans: Metacognitive Policy
Optimization for Multi-Agent LLMs with Continual Learning", arXiv 2603.07972).

For each decision a learner seat took in a round >= 1 of a played problem, the world replays the problem
(`worlds.deferral.replay`) once per candidate c in {EVAL j for every other agent j, CREATE, DEFER}: every other
decision as it was played (later rounds' too: EVAL j adopts whatever j then holds, CREATE keeps its answer,
DEFER asks the expert again), the expert's reply to the problem as it was given (asked once when nobody
deferred in play). CREATE's answer is the agent's CREATE answer when it created at this state, else its own
round-0 answer. The candidate's realized reward is

    r_c = 1[the team's final answer is correct] - defer_cost * 1[c = DEFER] - create_cost * 1[c = CREATE]

and its advantage is group-relative, A_c = (r_c - mean_g r) / (std_g r + 1e-6), so advantages compare decisions
at the same state. Each candidate's completion is its canonical reply (`EVAL 2`, `CREATE 42`, `DEFER`, then the
stop token), valid in the state's reply grammar; log pi_old of its tokens is the learner's under the current
weights (before the update), under the grammar's masks, as the sampler would have drawn it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from agora.trajectory import Episode
from trainers.advantages import Sample, group_advantages, zero_variance_fraction
from worlds.deferral.replay import ExpertReply, candidate_actions, recorded_team, replay
from worlds.deferral.rules import CREATE, DEFER, EVAL, EXPERT
from worlds.deferral.world import DeferralConfig


def decision_reward(correct: bool, kind: int, *, defer_cost: float, create_cost: float) -> float:
    """r = 1[correct] - defer_cost * 1[DEFER] - create_cost * 1[CREATE] (HILA's cost-aware reward)."""
    return float(correct) - defer_cost * float(kind == DEFER) - create_cost * float(kind == CREATE)


@dataclass
class DecisionGroup:
    """The candidates of one (problem, round, agent) state and their realized outcomes."""

    episode: int
    seed: int
    round: int
    agent: str
    prompt_ids: list[int]
    grammar: str | None
    temperature: float | None
    actions: list[dict[str, Any]]  # the candidates
    replies: list[str]  # their canonical replies
    correct: list[bool]  # the team's final answer was right after each candidate
    rewards: list[float]
    played: int  # index of the candidate the learner took in play (-1: a fallback or illegal action)

    @property
    def uid(self) -> str:
        return f"{self.seed}/{self.round}/{self.agent}"


def played_actions(episode: Episode) -> dict[tuple[int, str], Any]:
    """(round, agent) -> the team action taken in `episode` (each team agent acts once per round)."""
    out: dict[tuple[int, str], Any] = {}
    rounds: dict[str, int] = {}
    for step in episode.steps:
        if step.agent != EXPERT:
            r = rounds[step.agent] = rounds.get(step.agent, -1) + 1
            out[(r, step.agent)] = step.action
    return out


def played_expert(episode: Episode) -> Any:
    """The expert's first reply in `episode`, or None when nobody deferred."""
    return next((step.action for step in episode.steps if step.agent == EXPERT), None)


def decision_groups(
    episodes: list[Episode],
    config: DeferralConfig,
    seats: list[str],
    expert_for: Callable[[Episode], ExpertReply],
) -> list[DecisionGroup]:
    """One group per decision of a seat in `seats` in a round >= 1 of each episode (module docstring)."""
    groups = []
    for episode in episodes:
        played = played_actions(episode)
        expert = expert_for(episode)
        rounds: dict[str, int] = {}
        for step in episode.steps:
            if step.agent == EXPERT:
                continue
            r = rounds[step.agent] = rounds.get(step.agent, -1) + 1
            if r == 0 or step.agent not in seats or step.prompt_ids is None:
                continue
            me = int(step.agent.rsplit("_", 1)[1])
            chosen = played[(r, step.agent)] or {}
            own = chosen.get("answer", "") if chosen.get("type") == CREATE else played[(0, step.agent)]["answer"]
            actions = candidate_actions(config.team_size, me, own)
            correct, rewards, replies = [], [], []
            for action in actions:
                world = replay(config, episode.seed, recorded_team({**played, (r, step.agent): action}), expert)
                correct.append(bool(world.correct))
                rewards.append(
                    decision_reward(
                        world.correct, action["type"], defer_cost=config.defer_cost, create_cost=config.create_cost
                    )
                )
                replies.append(world.render_action(step.agent, action))  # a finished world is in a round >= 1
            groups.append(
                DecisionGroup(
                    episode=episode.index,
                    seed=episode.seed,
                    round=r,
                    agent=step.agent,
                    prompt_ids=list(step.prompt_ids),
                    grammar=step.grammar,
                    temperature=step.temperature,
                    actions=actions,
                    replies=replies,
                    correct=correct,
                    rewards=rewards,
                    played=played_index(actions, chosen, step.fallback),
                )
            )
    return groups


def group_statistics(groups: list[DecisionGroup]) -> dict[str, float]:
    """inner/* of the played decisions and their groups: deferral and create rates in play, the mean reward of
    the candidate the learner played (an illegal or fallback decision counts as the group's worst) and of the
    group's best, the fraction of groups where DEFER is (one of) the best."""
    if not groups:
        return {"inner/groups": 0.0}
    played = [g.rewards[g.played] if g.played >= 0 else min(g.rewards) for g in groups]
    kinds = [g.actions[g.played]["type"] if g.played >= 0 else -1 for g in groups]
    rewards = np.array([r for g in groups for r in g.rewards])
    return {
        "inner/groups": float(len(groups)),
        "inner/deferral_rate": float(np.mean([k == DEFER for k in kinds])),
        "inner/create_rate": float(np.mean([k == CREATE for k in kinds])),
        "inner/reward_played": float(np.mean(played)),
        "inner/reward_best": float(np.mean([max(g.rewards) for g in groups])),
        "inner/defer_best_fraction": float(np.mean([g.rewards[-1] >= max(g.rewards) - 1e-12 for g in groups])),
        "inner/zero_variance_groups": zero_variance_fraction(rewards, [g.uid for g in groups for _ in g.rewards]),
    }


def played_index(actions: list[dict[str, Any]], chosen: Any, fallback: bool) -> int:
    """The candidate the learner chose in play (same kind, and same target for EVAL); -1 for a fallback or an
    illegal action."""
    if fallback or not isinstance(chosen, dict):
        return -1
    for i, action in enumerate(actions):
        if action["type"] == chosen.get("type") and (
            action["type"] != EVAL or action["target"] == chosen.get("target")
        ):
            return i
    return -1


def group_samples(groups: list[DecisionGroup], model, tokenizer, masks, *, std_normalize: bool = True) -> list[Sample]:
    """GRPO samples of every candidate: its canonical reply's tokens (plus the stop token), log pi_old under the
    current weights and the state's grammar masks, and its group-relative advantage."""
    import torch

    from agora.scoring import sequence_logprobs

    rewards = np.array([r for g in groups for r in g.rewards])
    advantages = group_advantages(rewards, [g.uid for g in groups for _ in g.rewards], std_normalize=std_normalize)
    samples, k = [], 0
    model.eval()
    for g in groups:
        completions = [
            tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id] for text in g.replies
        ]
        prompts = [g.prompt_ids] * len(completions)
        temperature = g.temperature if g.temperature else 1.0
        with torch.no_grad():
            allowed = masks.allowed([g.grammar] * len(completions), completions)
            logp, _, mask, _ = sequence_logprobs(
                model, prompts, completions, temperature=temperature, pad_id=tokenizer.pad_token_id, allowed=allowed
            )
        for row, completion in enumerate(completions):
            old = logp[row, logp.shape[1] - len(completion) :].float().cpu().tolist()
            samples.append(
                Sample(
                    prompt_ids=g.prompt_ids,
                    completion_ids=completion,
                    old_logprobs=old,
                    advantage=float(advantages[k]),
                    group=g.uid,
                    episode=g.episode,
                    agent=g.agent,
                    turn=g.round,
                    ret=g.rewards[row],
                    temperature=temperature,
                    grammar=g.grammar,
                )
            )
            k += 1
    return samples
