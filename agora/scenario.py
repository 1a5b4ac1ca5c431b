"""Scenario files: the YAML a user writes, validated into something the engine can run.

Every mistake becomes a `ScenarioError` naming the file, the key path (`agents.alice.temperature`),
what is wrong and what is allowed. Nothing downstream ever sees an unvalidated value.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agora.errors import ScenarioError, in_file
from agora.registry import AGENTS, WORLDS, Entry


class WorldSpec(BaseModel):
    """`world: {id: negotiation, <param>: <value>, ...}`; every key but `id` is a world parameter."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(description="registered world id (`agora worlds`)")


class AgentSpec(BaseModel):
    """`agents.<seat>: {policy: llm, <param>: <value>, ...}`; every key but `policy` is a policy parameter."""

    model_config = ConfigDict(extra="allow")
    policy: str = Field(description="registered agent id (`agora agents`)")


class TrackingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(True, description="record the run in MLflow")
    experiment: str | None = Field(None, description="MLflow experiment name (default: the scenario name)")
    uri: str | None = Field(
        None, description="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else the embedded store)"
    )


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, description="run name shown in MLflow")
    description: str = ""
    world: WorldSpec
    agents: dict[str, AgentSpec] = Field(min_length=1, description="seat name or glob pattern -> policy")
    episodes: int = Field(ge=1, le=10_000_000, description="number of episodes to play")
    seed: int = Field(0, ge=0, description="root seed: every episode seed and sampler seed derives from it")
    concurrency: int = Field(8, ge=1, le=4096, description="episodes stepped together (LLM turns batched across them)")
    max_retries: int = Field(
        1, ge=0, le=10, description="re-prompts after unparseable agent text, before a fallback action"
    )
    tracking: TrackingSpec = TrackingSpec()


@dataclass(frozen=True)
class Seat:
    agent: str  # the world's agent name
    key: str  # the key in `agents:` that matched it
    entry: Entry
    config: BaseModel  # the agent's validated Config


class WorldFile:
    """A resolved file (scenario or campaign) with a `world_entry` and its `world_config`."""

    def make_world(self):
        return self.world_entry.load()(self.world_config)

    def world_json(self) -> dict[str, Any]:
        """The world's id and every parameter, defaults filled in (for the logged config)."""
        return {"id": self.world_entry.name, **self.world_config.model_dump(mode="json")}


@dataclass(frozen=True)
class ResolvedScenario(WorldFile):
    """A scenario whose world, seats and every parameter have been checked and typed."""

    spec: Scenario
    world_entry: Entry
    world_config: BaseModel
    seats: dict[str, Seat]
    source: str | None  # the file it came from (None when built in code)
    text: str | None  # the file's text, logged as an artifact

    def resolved_config(self) -> dict[str, Any]:
        """Everything that determines the run, with defaults filled in (logged as MLflow params)."""
        out = self.spec.model_dump(exclude={"world", "agents"})
        out["world"] = self.world_json()
        out["agents"] = {
            name: {"policy": seat.entry.name, **seat.config.model_dump(mode="json")}
            for name, seat in self.seats.items()
        }
        return out


def read_mapping(path: str | Path, *, hint: str) -> tuple[dict[str, Any], str, str]:
    """(mapping, text, file name) of a scenario or campaign YAML file; a `ScenarioError` for a missing,
    unreadable (not UTF-8), malformed or empty file, or one whose top level is not a mapping."""
    path = Path(path)
    file = str(path)
    if not path.is_file():
        raise ScenarioError("file not found" if not path.exists() else "not a file", file=file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"cannot read: {exc}", file=file, hint="save it as UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ScenarioError(
            f"invalid YAML: {where}{problem}", file=file, hint="check indentation and quoting near that line"
        ) from None
    if data is None:
        raise ScenarioError("the file is empty", file=file, hint=hint)
    if not isinstance(data, dict):
        raise ScenarioError(
            f"expected a mapping of keys at the top level, got {type(data).__name__}", file=file, hint=hint
        )
    return data, text, file


def is_campaign(data: dict[str, Any]) -> bool:
    """A campaign file has a top-level `trainer:` or `kind:` key (scenario files have neither)."""
    return "trainer" in data or "kind" in data


def load_scenario(path: str | Path, overrides: dict[str, Any] | None = None) -> ResolvedScenario:
    """Read, parse and validate a scenario file. `overrides` replace top-level keys (CLI flags)."""
    data, text, file = read_mapping(path, hint="copy one of the files in scenarios/ to start from")
    if is_campaign(data):
        raise ScenarioError(
            "this is a campaign file (it has `trainer:` or `kind:`), not a scenario",
            file=file,
            hint=f"train it with `agora train {file}`",
        )
    data.update(overrides or {})
    return resolve_scenario(data, source=file, text=text)


def resolve_scenario(data: dict[str, Any], *, source: str | None = None, text: str | None = None) -> ResolvedScenario:
    with in_file(source):
        spec = validate_model(Scenario, data, prefix="", file=source)
        world_entry = WORLDS.get(spec.world.id, path="world.id")
        world_config = validate_model(world_entry.config, spec.world.model_extra or {}, prefix="world", file=source)
        seats = _match_seats(spec, world_entry, world_config, source)
    return ResolvedScenario(spec, world_entry, world_config, seats, source, text)


def _match_seats(spec: Scenario, world_entry: Entry, world_config: BaseModel, file: str | None) -> dict[str, Seat]:
    """Give every seat of the world exactly one agent spec: an exact name wins over a glob pattern."""
    agents = list(world_entry.load()(world_config).possible_agents)
    for key in spec.agents:
        if not fnmatch.filter(agents, key):
            close = difflib.get_close_matches(key, agents, n=1)
            raise ScenarioError(
                f"no seat matches '{key}' in world '{world_entry.name}'; seats: {', '.join(agents)}",
                file=file,
                path=f"agents.{key}",
                hint=f"did you mean '{close[0]}'?" if close else "use a seat name or a glob pattern such as '*'",
            )
    seats: dict[str, Seat] = {}
    built: dict[str, tuple[Entry, BaseModel]] = {}
    for agent in agents:
        key = agent if agent in spec.agents else next((k for k in spec.agents if fnmatch.fnmatch(agent, k)), None)
        if key is None:
            raise ScenarioError(
                f"seat '{agent}' of world '{world_entry.name}' has no agent",
                file=file,
                path="agents",
                hint=f"add `{agent}: {{policy: ...}}` or a pattern such as '*'",
            )
        if key not in built:
            agent_spec = spec.agents[key]
            entry = AGENTS.get(agent_spec.policy, world=world_entry.name, path=f"agents.{key}.policy")
            built[key] = (
                entry,
                validate_model(entry.config, agent_spec.model_extra or {}, prefix=f"agents.{key}", file=file),
            )
        entry = built[key][0]
        if not fnmatch.fnmatch(agent, plays := entry.load().seats):
            raise ScenarioError(
                f"policy '{entry.name}' plays the seats '{plays}', not '{agent}'",
                file=file,
                path=f"agents.{key}.policy",
                hint=f"run `agora agents --world {world_entry.name}` to see which agents play which seats",
            )
        seats[agent] = Seat(agent, key, *built[key])
    return seats


def validate_model(model: type[BaseModel], data: Any, *, prefix: str, file: str | None) -> Any:
    """`model` validated from a file's `data`; every pydantic error becomes one `ScenarioError` naming `file`,
    the key path under `prefix` (e.g. `agents.alice.temperature`), what is wrong and what is allowed."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, model, prefix, file) from None


def _explain(exc: ValidationError, model: type[BaseModel], prefix: str, file: str | None) -> ScenarioError:
    """Turn pydantic's errors into one ScenarioError: key path, problem and what is allowed."""
    lines, hint = [], None
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        path = ".".join([prefix, *loc] if prefix else loc) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            close = difflib.get_close_matches(loc[-1], allowed, n=1)
            lines.append(f"{path}: unknown key; allowed here: {', '.join(allowed)}")
            hint = hint or (f"did you mean '{close[0]}'?" if close else None)
        elif kind == "missing":
            lines.append(f"{path}: required key is missing")
        else:
            lines.append(f"{path}: {err['msg']} (got {err.get('input')!r})")
    first_path = lines[0].split(":")[0] if len(lines) == 1 else None
    message = lines[0].split(": ", 1)[1] if first_path else "\n  " + "\n  ".join(lines)
    return ScenarioError(message, file=file, path=first_path, hint=hint)


def _allowed_keys(model: type[BaseModel], loc: list[str]) -> list[str]:
    """Field names of the (nested) model at `loc`, for 'allowed here' messages."""
    for part in loc:
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    extra = {"WorldSpec": ["id", "<world parameters>"], "AgentSpec": ["policy", "<policy parameters>"]}
    return extra.get(model.__name__, list(model.model_fields))
