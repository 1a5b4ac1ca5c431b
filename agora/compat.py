"""Numeric views of the worlds for MARL libraries (TorchRL, SuperSuit, Tianshou, RLlib).

`flat_view(env)` wraps a world (AEC stays AEC, Parallel stays Parallel) so that every seat has

- the observation `{"observation": Box(float32, (d,)), "action_mask": Box(int8, 0..1, (n,))}`, PettingZoo's
  classic `action_mask` convention (chess, connect four): the world's observation with its text fields dropped
  (or the world's own numeric encoding, `numeric_observation`), flattened by gymnasium (a Discrete becomes a
  one-hot) and zero-padded to the longest seat's length;
- the action `Discrete(n)`: an index into the world's action table (`NumericWorld.action_table`), one table
  for every seat (the union of what the seats can do), each seat's mask marking what it may do now: in an AEC
  world only the seat to move (`agent_selection`) has legal entries, in a Parallel world every live seat; a seat
  that waits or has finished has an all-zero mask.

All seats thus share one observation space and one action space, as SuperSuit's vector envs, TorchRL's
agent groups and parameter sharing want. A masked-out index is passed to the world as the action it names,
and the world treats it as it treats any illegal action (each world's docstring says how). Worlds whose whole
state a centralised critic may see also give PettingZoo's `state()` and `state_space`; the view passes them on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils.wrappers import BaseParallelWrapper, BaseWrapper


class NumericWorld(ABC):
    """What a world declares for its numeric view: a base class of the world (or of its numeric mixin).

    Three methods to write: `action_table`, `table_action` and `action_mask`. Two hooks with defaults:
    `numeric_observation_space(agent)` and `numeric_observation(agent, observation)` (by default the observation
    without its text fields; a world overrides both where dropping the text would lose what matters). A world
    whose whole state a centralised critic may see also gives PettingZoo's `state()` and `state_space`."""

    @abstractmethod
    def action_table(self) -> list[str]:
        """Names of the world's discrete actions: the same list for every seat and every episode of this config."""

    @abstractmethod
    def table_action(self, agent: str, index: int) -> Any:
        """The world action (as `step` takes it) that table entry `index` names for `agent` now."""

    @abstractmethod
    def action_mask(self, agent: str) -> np.ndarray:
        """int8 over the table: 1 where the entry is a legal action of `agent` were it to move now. The view
        zeroes the mask of every seat that does not move now (PettingZoo's classic convention)."""

    def numeric_observation_space(self, agent: str) -> spaces.Space | None:
        """The space of `numeric_observation`: by default the observation space without its text leaves."""
        return numeric_space(self.observation_space(agent))

    def numeric_observation(self, agent: str, observation: Any) -> Any:
        """`observation` as a sample of `numeric_observation_space`: by default without its text fields."""
        return numeric_value(self.observation_space(agent), observation)


def numeric_space(space: spaces.Space) -> spaces.Space | None:
    """`space` without its text leaves (Text inside Dict and Tuple); None when nothing numeric is left."""
    if isinstance(space, spaces.Text):
        return None
    if isinstance(space, spaces.Dict):
        kept = {key: numeric_space(sub) for key, sub in space.spaces.items()}
        kept = {key: sub for key, sub in kept.items() if sub is not None}
        return spaces.Dict(kept) if kept else None
    if isinstance(space, spaces.Tuple):
        kept = [sub for sub in (numeric_space(s) for s in space.spaces) if sub is not None]
        return spaces.Tuple(kept) if kept else None
    return space


def numeric_value(space: spaces.Space, value: Any) -> Any:
    """The part of `value` (a sample of the unfiltered space) that `numeric_space` keeps."""
    if isinstance(space, spaces.Dict):
        parts = {key: numeric_value(sub, value[key]) for key, sub in space.spaces.items()}
        return {key: part for key, part in parts.items() if part is not None}
    if isinstance(space, spaces.Tuple):
        parts = [numeric_value(sub, v) for sub, v in zip(space.spaces, value)]
        return tuple(part for part in parts if part is not None)
    return None if isinstance(space, spaces.Text) else value


def numeric_info(info: dict[str, Any]) -> dict[str, Any]:
    """A world's info without what tensor libraries cannot hold: text, nested dicts, and the world's own
    `action_mask` (the view's mask is in the observation)."""
    return {
        key: value
        for key, value in info.items()
        if key != "action_mask"
        and (
            isinstance(value, (bool, int, float, np.number))
            or isinstance(value, np.ndarray)
            and value.dtype.kind in "biuf"
        )
    }


class Encoding:
    """The view's spaces and its two translations: world observation -> numeric, table index -> world action."""

    def __init__(self, env: AECEnv | ParallelEnv, mask_in_observation: bool, turn_based: bool):
        world = env.unwrapped
        if not isinstance(world, NumericWorld):
            raise TypeError(
                f"{type(world).__name__} declares no action table: a numeric view needs a world that subclasses "
                "agora.compat.NumericWorld (`action_table`, `table_action` and `action_mask`)"
            )
        self.env, self.world, self.table = env, world, list(world.action_table())
        self.turn_based = turn_based
        self.own_spaces, self.flat_spaces = {}, {}
        for agent in env.possible_agents:
            own = world.numeric_observation_space(agent)
            self.own_spaces[agent] = own
            self.flat_spaces[agent] = spaces.flatten_space(own) if own is not None else None
        self.width = max((s.shape[0] for s in self.flat_spaces.values() if s is not None), default=0)
        low, high = np.zeros(self.width, np.float32), np.zeros(self.width, np.float32)
        for flat in self.flat_spaces.values():
            if flat is not None:
                low[: flat.shape[0]] = np.minimum(low[: flat.shape[0]], flat.low)
                high[: flat.shape[0]] = np.maximum(high[: flat.shape[0]], flat.high)
        self.observation = spaces.Box(low, high, (self.width,), dtype=np.float32)
        self.mask = spaces.Box(0, 1, (len(self.table),), dtype=np.int8)
        self.mask_in_observation = mask_in_observation
        self.observation_space = (
            spaces.Dict({"observation": self.observation, "action_mask": self.mask})
            if mask_in_observation
            else self.observation
        )
        self.action_space = spaces.Discrete(len(self.table))

    def encode(self, agent: str, observation: Any) -> dict[str, np.ndarray] | np.ndarray:
        """The seat's observation: `{"observation": float32 vector, "action_mask": int8 vector}`, or the vector."""
        vector = np.zeros(self.width, dtype=np.float32)
        own = self.own_spaces[agent]
        if own is not None and observation is not None:
            flat = spaces.flatten(own, self.world.numeric_observation(agent, observation))
            vector[: flat.shape[0]] = flat
        if not self.mask_in_observation:
            return vector
        return {"observation": vector, "action_mask": self.action_mask(agent)}

    def moves(self, agent: str) -> bool:
        """Whether `agent` acts now: in an AEC world the selected seat while its episode runs, in a Parallel world
        every live seat."""
        if not self.turn_based:
            return agent in self.env.agents
        env = self.env
        return agent == env.agent_selection and not (env.terminations[agent] or env.truncations[agent])

    def action_mask(self, agent: str) -> np.ndarray:
        """The world's mask for the seat that acts now; all zeros for every other seat (PettingZoo's classic
        convention: a seat that waits or has finished has no legal action)."""
        if not self.moves(agent):
            return np.zeros(len(self.table), dtype=np.int8)
        return np.asarray(self.world.action_mask(agent), dtype=np.int8).reshape(len(self.table))

    def info(self, agent: str, info: dict[str, Any]) -> dict[str, Any]:
        """The world's info without what tensor libraries cannot hold; with the mask when it is not observed."""
        numeric = numeric_info(info)
        if not self.mask_in_observation:
            numeric["action_mask"] = self.action_mask(agent)
        return numeric

    def decode(self, agent: str, action: Any) -> Any:
        """The world action of table index `action` (None, a dead agent's action, stays None)."""
        if action is None:
            return None
        index = int(np.asarray(action).reshape(()))
        if not 0 <= index < len(self.table):
            raise ValueError(f"{agent}'s action {index} is outside the action table (0 to {len(self.table) - 1})")
        return self.world.table_action(agent, index)


class NumericAECView(BaseWrapper):
    """An AEC world seen through `Encoding`: observe() is numeric, step() takes a table index."""

    def __init__(self, env: AECEnv, mask_in_observation: bool = True):
        super().__init__(env)
        self.encoding = Encoding(env, mask_in_observation, turn_based=True)
        self.numeric_infos: dict[str, dict[str, Any]] = {}

    def observation_space(self, agent: str) -> spaces.Space:
        return self.encoding.observation_space

    def action_space(self, agent: str) -> spaces.Space:
        return self.encoding.action_space

    def observe(self, agent: str) -> dict[str, np.ndarray]:
        return self.encoding.encode(agent, self.env.observe(agent))

    @property
    def infos(self) -> dict[str, dict[str, Any]]:
        """The infos as of the last reset or step (the same objects until the next: PettingZoo compares them)."""
        return self.numeric_infos

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        self.env.reset(seed=seed, options=options)
        self.numeric_infos = {agent: self.encoding.info(agent, info) for agent, info in self.env.infos.items()}

    def step(self, action: Any) -> None:
        self.env.step(self.encoding.decode(self.agent_selection, action))
        self.numeric_infos = {agent: self.encoding.info(agent, info) for agent, info in self.env.infos.items()}

    def __str__(self) -> str:
        return str(self.env)


class NumericParallelView(BaseParallelWrapper):
    """A Parallel world seen through `Encoding`: numeric observations, one table index per seat and step."""

    def __init__(self, env: ParallelEnv, mask_in_observation: bool = True):
        super().__init__(env)
        self.encoding = Encoding(env, mask_in_observation, turn_based=False)

    def observation_space(self, agent: str) -> spaces.Space:
        return self.encoding.observation_space

    def action_space(self, agent: str) -> spaces.Space:
        return self.encoding.action_space

    def _encode_all(self, observations: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
        return {agent: self.encoding.encode(agent, obs) for agent, obs in observations.items()}

    def reset(self, seed: int | None = None, options: dict | None = None):
        observations, infos = self.env.reset(seed=seed, options=options)
        return self._encode_all(observations), {agent: self.encoding.info(agent, info) for agent, info in infos.items()}

    def step(self, actions: dict[str, Any]):
        world_actions = {agent: self.encoding.decode(agent, a) for agent, a in actions.items()}
        observations, rewards, terminations, truncations, infos = self.env.step(world_actions)
        infos = {agent: self.encoding.info(agent, info) for agent, info in infos.items()}
        return self._encode_all(observations), rewards, terminations, truncations, infos

    def __str__(self) -> str:
        return str(self.env)


def flat_view(env: AECEnv | ParallelEnv, mask_in_observation: bool = True) -> AECEnv | ParallelEnv:
    """The numeric view of a world (see the module docstring): AEC for an AEC world, Parallel for a Parallel one.

    `mask_in_observation=False` gives the plain Box observation, for wrappers that need a Box (SuperSuit's
    observation wrappers such as frame_stack_v1), and the mask in `infos[agent]["action_mask"]` instead.

    Turn-based AEC worlds go to parallel-only libraries (SuperSuit's vector envs) through PettingZoo's
    `turn_based_aec_to_parallel(flat_view(env))`: every seat sends an index each step, the mover's counts.
    """
    if isinstance(env, ParallelEnv):
        return NumericParallelView(env, mask_in_observation)
    if isinstance(env, AECEnv):
        return NumericAECView(env, mask_in_observation)
    raise TypeError(f"a numeric view wraps a PettingZoo AECEnv or ParallelEnv, not {type(env).__name__}")
