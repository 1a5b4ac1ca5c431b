"""Scenario files: the YAML a user writes, validated into something the engine can run.

Every mistake becomes a `ScenarioError` naming the file, the key path (`agents.alice.temperature`),
what is wrong and what is allowed. Nothing downstream ever sees an unvalidated value.

Every file a user hands Agora is read here: YAML by `read_mapping`, JSON by `read_json` and
`parse_json`. Both read JSON-like data only, within limits a hostile file cannot get past (aliases
may add at most `MAX_ALIAS_EXPANSION` nodes and characters, nesting at most `MAX_DEPTH` levels,
integers at most `MAX_INT_DIGITS` digits, no duplicate keys, UTF-8 text of at most `MAX_FILE_BYTES`).
Values are then validated strictly: a bool or a string is never taken for a number.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import re
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Mapping, Sequence

import pydantic_core
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from agora.errors import ScenarioError, in_file
from agora.execution import ExecutionSpec
from agora.overrides import apply_overrides, blamed
from agora.registry import AGENTS, WORLDS, Entry

MAX_FILE_BYTES = 16 * 2**20  # scenario, campaign and data files are small; a bigger one is a mistake
MAX_DEPTH = 64  # nesting levels of mappings and lists
MAX_ALIAS_EXPANSION = 1_000_000  # nodes plus characters that all YAML aliases together may add
MAX_INT_DIGITS = 100  # a seed fits in 20
MAX_SHOWN_CHARS = 80  # the most of a user's value an error message quotes
MAX_MESSAGE_CHARS = 400  # the most of a validator's message an error shows
MAX_ERRORS_SHOWN = 10  # validation problems listed in one message

_brief = reprlib.Repr()
_brief.maxstring = _brief.maxother = MAX_SHOWN_CHARS
_brief.maxlong, _brief.maxlevel = 40, 2
_brief.maxlist = _brief.maxdict = _brief.maxtuple = _brief.maxset = 4


def brief(value: Any) -> str:
    """`repr(value)` cut to a few dozen characters, in time that does not grow with `value` (for messages)."""
    return _brief.repr(value)


def cut(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters and an ellipsis (user text quoted in a message)."""
    return text if len(text) <= limit else text[:limit] + "..."


def printable(value: str) -> str:
    """A name shown in terminals and MLflow: printable text only (no control characters or ANSI escapes)."""
    if not value.isprintable():
        raise ValueError("must be printable text: no control characters, tabs, newlines or terminal escapes")
    return value


PrintableName = Annotated[str, AfterValidator(printable)]


# --- reading user files -------------------------------------------------------------------------

INT_TAG, FLOAT_TAG, MERGE_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:merge"
# YAML 1.2 floats PyYAML's 1.1 rules read as strings: 1e-4, 1E5, 2.5e3 (an exponent without a sign or a dot)
EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")


class FileError(yaml.MarkedYAMLError):
    """A YAML file past one of the reader's limits, with a duplicate key, or a value of an unsupported type."""

    def __init__(self, problem: str, mark: yaml.Mark, hint: str):
        super().__init__(problem=problem, problem_mark=mark)
        self.hint = hint


try:
    from yaml.cyaml import CParser as EventParser  # libyaml: linear time however the flow is nested
except ImportError:  # a PyYAML built without libyaml: its Python parser (slower, still bounded)

    class EventParser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
        def __init__(self, stream):
            yaml.reader.Reader.__init__(self, stream)
            yaml.scanner.Scanner.__init__(self)
            yaml.parser.Parser.__init__(self)


class FileLoader(yaml.composer.Composer, yaml.constructor.SafeConstructor, yaml.resolver.Resolver, EventParser):
    """PyYAML's safe loader, limited: JSON-like values only (timestamps stay strings; binary, sets and
    ordered maps are refused), no duplicate keys, bounded nesting, alias expansion and integer size.
    Events come from `EventParser`; composing (where aliases and nesting are counted) is PyYAML's Python."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    yaml_constructors = dict(yaml.SafeLoader.yaml_constructors)

    def __init__(self, stream):
        EventParser.__init__(self, stream)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self.depth = 0
        self.weights: dict[int, int] = {}  # id(node) -> its size with every alias in it expanded
        self.expansion = 0  # what aliases have added so far

    def compose_node(self, parent, index):
        mark = self.peek_event().start_mark
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            if id(node) not in self.weights:
                raise FileError("an alias inside the node it refers to", mark, "a value cannot contain itself")
            self.expansion += self.weights[id(node)]
            if self.expansion > MAX_ALIAS_EXPANSION:
                raise FileError(
                    f"aliases expand the file beyond {MAX_ALIAS_EXPANSION:,} nodes and characters",
                    mark,
                    "write the values out, or use fewer aliases (`*name`)",
                )
            return node
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FileError(f"nested more than {MAX_DEPTH} levels deep", mark, "Agora's files need a few levels")
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        self.weights[id(node)] = node_weight(node, self.weights)
        return node

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, KeyError, TypeError, OverflowError):  # e.g. `!!int abc`, `!!bool maybe`
            raise FileError(
                f"not a valid {node.tag.rsplit(':', 1)[-1]}: {brief(node.value)}", node.start_mark, "drop the tag"
            ) from None

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True) if key_node.tag != MERGE_TAG else None
                if key is None or isinstance(key, (list, dict)):
                    continue  # merges (`<<: *base`) may be overridden; unhashable keys are PyYAML's error
                if key in seen:
                    raise FileError(
                        f"duplicate key {brief(key)} (first on line {seen[key]})",
                        key_node.start_mark,
                        "a key may appear once in a mapping; remove one of them",
                    )
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)

    def construct_bounded_int(self, node):
        digits = sum(c.isdigit() for c in node.value)
        if digits > MAX_INT_DIGITS:
            raise FileError(f"an integer of {digits:,} digits", node.start_mark, f"at most {MAX_INT_DIGITS} digits")
        return self.construct_yaml_int(node)

    def refuse_tag(self, node):
        raise FileError(
            f"the tag {node.tag.replace('tag:yaml.org,2002:', '!!')} is not supported",
            node.start_mark,
            "plain values only: drop the tag",
        )


FileLoader.add_implicit_resolver(FLOAT_TAG, EXPONENT_FLOAT, list("-+0123456789."))
FileLoader.add_constructor(INT_TAG, FileLoader.construct_bounded_int)
for _tag in ("timestamp", "binary", "set", "omap", "pairs"):
    FileLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", FileLoader.refuse_tag)


def node_weight(node: yaml.Node, weights: dict[int, int]) -> int:
    """1 + characters for a scalar; 1 + the children's weights for a list or mapping (aliases expanded)."""
    if isinstance(node, yaml.ScalarNode):
        return 1 + len(node.value)
    children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value
    return 1 + sum(weights[id(child)] for child in children)


def read_text(path: str | Path) -> str:
    """A user file's text; a `ValueError` that says what is wrong for a missing, huge or non-UTF-8 file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError("file not found" if not path.exists() else "not a file")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ValueError(f"the file is larger than {MAX_FILE_BYTES // 2**20} MiB")
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(
            f"cannot read: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save it as UTF-8"
        ) from None


def parse_yaml(text: str) -> Any:
    """The value of a YAML document, read by `FileLoader`; a `yaml.YAMLError` (with a line) for anything else."""
    return FileLoader(text).get_single_data()


def parse_json(text: str) -> Any:
    """A JSON value within the same limits as YAML files (no duplicate keys, NaN or huge integers, bounded nesting);
    a `ValueError` with a short message otherwise."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out = dict(items)
        if len(out) < len(items):
            seen: set[str] = set()
            duplicate = next(k for k, _ in items if k in seen or seen.add(k))
            raise ValueError(f"duplicate key {brief(duplicate)}")
        return out

    def integer(digits: str) -> int:
        if len(digits.lstrip("-")) > MAX_INT_DIGITS:
            raise ValueError(f"an integer of {len(digits.lstrip('-')):,} digits (at most {MAX_INT_DIGITS})")
        return int(digits)

    def constant(name: str) -> float:
        raise ValueError(f"{name} is not a JSON number")

    try:
        value = json.loads(text, object_pairs_hook=pairs, parse_int=integer, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    except RecursionError:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep") from None
    if nesting(value) > MAX_DEPTH:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
    return value


def nesting(value: Any) -> int:
    """How many levels of lists and mappings `value` has (iteratively: no recursion limit to hit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (list, dict)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def read_json(path: str | Path) -> Any:
    """A user's JSON file (`parse_json` on `read_text`); a `ValueError` naming the file otherwise."""
    try:
        return parse_json(read_text(path))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def read_mapping(path: str | Path, *, hint: str) -> tuple[dict[str, Any], str, str]:
    """(mapping, text, file name) of a scenario or campaign YAML file; a `ScenarioError` for a missing,
    unreadable (not UTF-8), malformed or empty file, one past the reader's limits, or one whose top level
    is not a mapping."""
    file = str(path)
    try:
        text = read_text(path)
    except ValueError as exc:
        raise ScenarioError(str(exc), file=file) from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = cut(getattr(exc, "problem", None) or str(exc), MAX_MESSAGE_CHARS)
        hint = getattr(exc, "hint", None) or "check indentation and quoting near that line"
        if "nesting depth" in problem:  # libyaml's own limit, met before ours when flow collections nest
            problem, hint = f"nested more than {MAX_DEPTH} levels deep", "Agora's files need a few levels"
        raise ScenarioError(f"invalid YAML: {where}{problem}", file=file, hint=hint) from None
    if data is None:
        raise ScenarioError("the file is empty", file=file, hint=hint)
    if not isinstance(data, dict):
        raise ScenarioError(
            f"expected a mapping of keys at the top level, got {type(data).__name__}", file=file, hint=hint
        )
    return data, text, file


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
    traces: int = Field(
        100,
        ge=0,
        description="episodes (the first, by index) logged as MLflow traces and HTML replays (train "
        "campaigns: the final evaluation's, per opponent); 0: none",
    )


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: PrintableName = Field(min_length=1, description="run name shown in MLflow (printable text)")
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
    execution: ExecutionSpec = ExecutionSpec()


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
    overrides: tuple[str, ...] = ()  # the command line's `key=value` overrides, as given (tagged on the run)

    def resolved_config(self) -> dict[str, Any]:
        """Everything that determines the run, with defaults filled in (logged as MLflow params)."""
        out = self.spec.model_dump(exclude={"world", "agents"})
        out["world"] = self.world_json()
        out["agents"] = {
            name: {"policy": seat.entry.name, **seat.config.model_dump(mode="json")}
            for name, seat in self.seats.items()
        }
        return out

    def file_config(self) -> dict[str, Any]:
        """The scenario as a file's mapping, overrides applied and defaults filled in (`agora validate --print`):
        keyed as in the file (patterns stay patterns), so that it validates again to the same scenario."""
        out = self.spec.model_dump(mode="json")  # world and agents are replaced in place (the file's order)
        out["world"] = self.world_json()
        chosen = {seat.key: seat for seat in self.seats.values()}
        out["agents"] = {
            key: {"policy": chosen[key].entry.name, **chosen[key].config.model_dump(mode="json")}
            if key in chosen
            else agent.model_dump(mode="json")  # a pattern whose seats all have an exact key: kept as written
            for key, agent in self.spec.agents.items()
        }
        return out


SCENARIO_KEYS = ("agents", "episodes")  # keys only scenario files have
# keys only campaign files have (every campaign kind has the last two)
CAMPAIGN_KEYS = ("kind", "trainer", "iterations", "checkpoint")


def file_kind(data: dict[str, Any]) -> str | None:
    """A file's kind, "scenario" or "campaign", from the keys only one kind has (`kind:` decides alone); None
    when the keys say neither or both (the file is then validated as what the command expects)."""
    if "kind" in data:
        return "campaign"
    scenario, campaign = (any(k in data for k in keys) for keys in (SCENARIO_KEYS, CAMPAIGN_KEYS))
    return None if scenario == campaign else "campaign" if campaign else "scenario"


def is_campaign(data: dict[str, Any]) -> bool:
    """Whether `agora validate` checks this file as a campaign (`file_kind`; a file of neither kind is a scenario)."""
    return file_kind(data) == "campaign"


def check_kind(data: dict[str, Any], expected: str, file: str) -> None:
    """A `ScenarioError` saying which command a file of the other kind goes to (`file_kind`)."""
    kind = file_kind(data)
    if kind is not None and kind != expected:
        command = "train" if kind == "campaign" else "run"
        keys = [f"`{k}:`" for k in (CAMPAIGN_KEYS if kind == "campaign" else SCENARIO_KEYS) if k in data]
        raise ScenarioError(
            f"this is a {kind} file: use `agora {command}`",
            file=file,
            hint=f"it has {' and '.join(keys)}; {kind}s go to `agora {command} {file}`",
        )


# --- command-line overrides (`key=value`) ---------------------------------------------------------


def parse_override(arg: str) -> tuple[str, Any]:
    """`agents.alice.temperature=0` -> ("agents.alice.temperature", 0): the value is read as YAML (`0`, `true`,
    `[1, 2]`, `{a: 1}`, `null`; quoted text stays text); a `ScenarioError` for a malformed one."""
    key, equals, text = arg.partition("=")
    key = key.strip()
    if not equals:
        raise ScenarioError(f"override {brief(arg)} has no '=': write key=value, e.g. world.max_turns=4")
    if not key or not all(key.split(".")):
        raise ScenarioError(f"override {brief(arg)}: empty key or key part; write key=value, e.g. world.max_turns=4")
    try:
        return key, parse_yaml(text)
    except yaml.YAMLError as exc:
        problem = cut(" ".join(str(getattr(exc, "problem", None) or exc).split()), MAX_MESSAGE_CHARS)
        raise ScenarioError(
            f"override {brief(arg)}: the value is not valid YAML: {problem}",
            hint=f"quote text with special characters, e.g. {key}=\"'a: b'\"",
        ) from None


def read_overrides(overrides: Mapping[str, Any] | Sequence[str] | None) -> tuple[dict[str, Any], tuple[str, ...]]:
    """(dotted key -> value, the overrides as given) from `key=value` arguments, or from a mapping (code)."""
    if not overrides:
        return {}, ()
    if isinstance(overrides, str):
        overrides = [overrides]
    if isinstance(overrides, Mapping):
        shown = (f"{k}={v if isinstance(v, str) else json.dumps(v, default=str)}" for k, v in overrides.items())
        return dict(overrides), tuple(shown)
    return dict(map(parse_override, overrides)), tuple(overrides)


def load_scenario(path: str | Path, overrides: Mapping[str, Any] | Sequence[str] | None = None) -> ResolvedScenario:
    """Read, parse and validate a scenario file. `overrides` set keys before validation: `key=value` arguments
    or a mapping; dotted keys reach into mappings (`agents.alice.temperature`)."""
    values, given = read_overrides(overrides)
    data, text, file = read_mapping(path, hint="copy one of the files in scenarios/ to start from")
    check_kind(data, "scenario", file)
    with blamed(given) as created:
        created.update(apply_overrides(data, values, file=file, seat_keys=("agents",)))
        return resolve_scenario(data, source=file, text=text, overrides=given)


def resolve_scenario(
    data: dict[str, Any], *, source: str | None = None, text: str | None = None, overrides: Sequence[str] = ()
) -> ResolvedScenario:
    with in_file(source):
        spec = validate_model(Scenario, data, prefix="", file=source)
        world_entry = WORLDS.get(spec.world.id, path="world.id")
        world_config = validate_model(world_entry.config, spec.world.model_extra or {}, prefix="world", file=source)
        seats = _match_seats(spec, world_entry, world_config, source)
    return ResolvedScenario(spec, world_entry, world_config, seats, source, text, tuple(overrides))


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
        # A file holds JSON-like data, so it is validated as JSON, strictly: `true` or `'2'` is not a number,
        # while lists still fill tuples and strings fill paths and enums as they would from JSON.
        return model.model_validate_json(pydantic_core.to_json(data, inf_nan_mode="constants"), strict=True)
    except ValidationError as exc:
        raise _explain(exc, model, prefix, file) from None


def _explain(exc: ValidationError, model: type[BaseModel], prefix: str, file: str | None) -> ScenarioError:
    """Turn pydantic's errors into one ScenarioError: key path, problem and what is allowed."""
    lines, hint = [], None
    errors = exc.errors()
    for err in errors[:MAX_ERRORS_SHOWN]:
        loc = [cut(str(p), MAX_SHOWN_CHARS) for p in err["loc"]]
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
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"{path}: {cut(message, MAX_MESSAGE_CHARS)} (got {brief(err.get('input'))})")
    if len(errors) > MAX_ERRORS_SHOWN:
        lines.append(f"... and {len(errors) - MAX_ERRORS_SHOWN} more")
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
