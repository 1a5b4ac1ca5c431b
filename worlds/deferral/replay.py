"""Replaying one problem of the deferral world with other decisions: the hook HILA's inner loop groups and
the baselines of its evaluation are built on.

A game is a function of its seed and of the actions taken (the problem and the majority's tie-break come
from the seed), so `replay(config, seed, team, expert)` plays the seed's problem again from the start,
asking `team(agent, observation, world)` for every team decision and `expert(observation, world)` for the
expert's reply, and returns the finished world (its `decisions`, `correct`, `costs`, `problem`). The
callbacks return action dicts as the world takes them; whatever they return, the world treats it as it
treats any agent's action (an unreadable one is illegal and keeps the agent's answer), so a replay never
raises on what an agent said.
"""

from __future__ import annotations

from typing import Any, Callable

from worlds.deferral.rules import CREATE, DEFER, EVAL, EXPERT
from worlds.deferral.world import DeferralConfig, raw_env

TeamChoice = Callable[[str, dict[str, Any], raw_env], Any]  # (agent, observation, world) -> team action
ExpertReply = Callable[[dict[str, Any], raw_env], Any]  # (observation, world) -> expert action


def replay(config: DeferralConfig, seed: int, team: TeamChoice, expert: ExpertReply) -> raw_env:
    """The problem of episode seed `seed` played to its end with `team`'s decisions and `expert`'s replies."""
    world = raw_env(config)
    world.reset(seed=seed)
    while not all(world.terminations.values()):
        agent = world.agent_selection
        observation = world.observe(agent)
        world.step(expert(observation, world) if agent == EXPERT else team(agent, observation, world))
    return world


def candidate_actions(team_size: int, me: int, create_answer: str) -> list[dict[str, Any]]:
    """Every decision open to agent `me` in a round >= 1: EVAL j for each other agent j, CREATE
    `create_answer`, DEFER (HILA's candidate set of one state)."""
    evals = [{"type": EVAL, "target": j, "answer": ""} for j in range(team_size) if j != me]
    return [*evals, {"type": CREATE, "target": 0, "answer": create_answer}, {"type": DEFER, "target": 0, "answer": ""}]


def recorded_team(actions: dict[tuple[int, str], Any], fallback: Any = None) -> TeamChoice:
    """A `team` callback that repeats recorded decisions, keyed by (round, agent); `fallback` where none was."""
    return lambda agent, observation, world: actions.get((int(observation["round"]), agent), fallback)
