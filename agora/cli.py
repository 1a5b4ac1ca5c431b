"""The `agora` command: run, train, validate, runs, env, worlds, agents, trainers, ui."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Literal, Optional, get_args, get_origin

import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

import agora
from agora.errors import AgoraError, plural
from agora.interrupts import interruptible
from agora.registry import ORIGIN

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Agora: multi-agent LLM worlds, rollouts and training."
)
console = Console()
errors = Console(stderr=True)


def escaped(text: object) -> str:
    """User text safe to print with rich: markup escaped, control characters (ANSI escapes) shown as `\\x1b`."""
    text = str(text)
    if not text.isprintable():
        text = "".join(c if c.isprintable() or c == "\n" else c.encode("unicode_escape").decode() for c in text)
    return escape(text)


@contextlib.contextmanager
def user_errors():
    """A user's mistake ends with its explanation and exit code 2, never a traceback."""
    try:
        yield
    except AgoraError as exc:
        errors.print(f"[bold red]error:[/] {escaped(exc)}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(2) from None


def show_version(value: bool) -> None:
    if value:
        console.print(f"agora {agora.__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def options(
    version: bool = typer.Option(
        False, "--version", callback=show_version, is_eager=True, help="print Agora's version and exit"
    ),
) -> None:
    """Agora: multi-agent LLM worlds, rollouts and training."""


OVERRIDES_HELP = (
    "key=value settings that replace the file's, read as YAML (0, true, [1, 2], null; quote text as 'text'); "
    "dotted keys reach into mappings: agents.alice.temperature=0 world.max_turns=4"
)


def execution_flags(backend: str | None, workers: int | None, address: str | None) -> dict[str, object]:
    """`--backend`, `--workers`, `--address` as the `execution.*` overrides they stand for: `--workers` or
    `--address` alone mean Ray workers (`--backend ray`)."""
    if backend is None and (workers is not None or address is not None):
        backend = "ray"
    return {"execution.backend": backend, "execution.workers": workers, "execution.address": address}


def with_flags(overrides: list[str] | None, **flags: object) -> list[str]:
    """The `key=value` arguments, then the flags that set keys (`--episodes 3` is `episodes=3`)."""
    return [*(overrides or []), *(f"{key}={value}" for key, value in flags.items() if value is not None)]


def progress_bar(disable: bool = False) -> Progress:
    """The live bar of every long CLI loop: description, bar, done/total, elapsed and remaining time, and
    what the rollout in progress has done (`Ticks`)."""
    columns = (
        TextColumn("{task.description}", style="bold", markup=False),  # names are the user's text, not markup
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[live]}", style="dim", markup=False),
    )
    return Progress(*columns, console=console, disable=disable)


class Ticks:
    """`Rollout.run`'s `on_tick(turns, tokens)` shown in a progress bar's `live` field, so that the display moves
    with every tick of LLM work: turns and generated tokens of the rollout in progress, and its tokens/s."""

    def __init__(self, progress: Progress, task, description: str | None = None):
        self.progress, self.task = progress, task
        self.description = description  # replaces the bar's "loading ..." once ticks arrive (the work has begun)
        self.first: tuple[float, int] | None = None  # (time, tokens) at the rollout's first tick
        self.turns = 0

    def __call__(self, turns: int, tokens: int) -> None:
        now = time.perf_counter()
        if self.first is None or turns < self.turns:  # a new rollout (campaigns run several)
            self.first = (now, tokens)
        self.turns = turns
        live = f"{turns:,} turns"
        if tokens:
            live += f", {tokens:,} tokens"
            since, tokens0 = self.first
            if now - since > 0.5:
                live += f" ({(tokens - tokens0) / (now - since):.0f} tokens/s)"
        if self.description is not None:
            self.progress.update(self.task, description=self.description)
            self.description = None
        self.progress.update(self.task, live=live)


def ui_hint(uri: str) -> str:
    """How to browse the store at `uri`: plain `agora ui` opens only the default one."""
    from agora.tracking import resolve_uri

    return "agora ui" if uri == resolve_uri(None) else f"agora ui --tracking-uri {shlex.quote(uri)}"


@app.command()
def run(
    scenario: Path = typer.Argument(..., help="scenario YAML file"),
    overrides: Optional[list[str]] = typer.Argument(None, help=OVERRIDES_HELP, show_default=False, metavar="KEY=VALUE"),
    episodes: Optional[int] = typer.Option(None, help="override `episodes`"),
    seed: Optional[int] = typer.Option(None, help="override `seed`"),
    concurrency: Optional[int] = typer.Option(None, help="override `concurrency`"),
    backend: Optional[str] = typer.Option(None, help="override `execution.backend`: local, or ray (rollout workers)"),
    workers: Optional[int] = typer.Option(None, help="override `execution.workers` (Ray rollout workers; implies ray)"),
    address: Optional[str] = typer.Option(
        None, help="override `execution.address`: a Ray cluster to join (auto, host:port, ray://host:port)"
    ),
    tracking_uri: Optional[str] = typer.Option(
        None, help="MLflow tracking URI (default: scenario, $MLFLOW_TRACKING_URI, embedded store)"
    ),
    no_track: bool = typer.Option(False, "--no-track", help="do not record the run in MLflow"),
) -> None:
    """Play a scenario's episodes and record them in MLflow."""
    from agora.rollout import ticks_to
    from agora.run import run_scenario
    from agora.scenario import load_scenario

    result = None
    try:
        with user_errors(), interruptible():
            resolved = load_scenario(
                scenario,
                with_flags(
                    overrides,
                    episodes=episodes,
                    seed=seed,
                    concurrency=concurrency,
                    **execution_flags(backend, workers, address),
                ),
            )
            spec = resolved.spec
            # A person typing (a policy with `interactive = True`) and a live bar would garble each other.
            interactive = any(seat.entry.load().interactive for seat in resolved.seats.values())
            with progress_bar(disable=interactive) as progress:
                task = progress.add_task(f"loading {spec.name}", total=spec.episodes, live="")
                with ticks_to(Ticks(progress, task, spec.name)):
                    result = run_scenario(
                        resolved,
                        tracking_uri=tracking_uri,
                        track=False if no_track else None,
                        on_episode=lambda _: progress.update(task, advance=1, description=spec.name),
                    )
                progress.update(task, description=spec.name)
            console.print(summary_table(resolved, result.summary))
            if result.run_id:
                console.print(
                    f"MLflow run [bold]{result.run_id}[/] in {escaped(result.tracking_uri)}  "
                    f"(browse with `{escaped(ui_hint(result.tracking_uri))}`)",
                    soft_wrap=True,  # a command to copy: never cut into lines
                )
            if result.interrupted:
                kept = " (run marked KILLED)" if result.run_id else ""
                errors.print(f"interrupted: {len(result.episodes)} finished episodes kept{kept}")
    except KeyboardInterrupt:  # before the run existed (loading), or after it ended (printing): nothing to keep
        errors.print("interrupted before the run started: nothing was recorded" if result is None else "interrupted")
        raise typer.Exit(130) from None
    if result.interrupted:
        raise typer.Exit(130)


@app.command()
def train(
    campaign: Path = typer.Argument(..., help="campaign YAML file"),
    overrides: Optional[list[str]] = typer.Argument(None, help=OVERRIDES_HELP, show_default=False, metavar="KEY=VALUE"),
    resume: bool = typer.Option(False, "--resume", help="continue from the last checkpoint, into the same MLflow run"),
    backend: Optional[str] = typer.Option(None, help="override `execution.backend`: local, or ray (rollout workers)"),
    workers: Optional[int] = typer.Option(None, help="override `execution.workers` (Ray rollout workers; implies ray)"),
    address: Optional[str] = typer.Option(
        None, help="override `execution.address`: a Ray cluster to join (auto, host:port, ray://host:port)"
    ),
    tracking_uri: Optional[str] = typer.Option(
        None, help="MLflow tracking URI (default: campaign, $MLFLOW_TRACKING_URI, embedded store)"
    ),
) -> None:
    """Run a training campaign of any kind (train, psro, lspo, ...): iterations, checkpoints, MLflow."""
    from agora.campaign import load_campaign, shielded

    with user_errors(), interruptible():
        resolved = runner = None
        try:
            # paths are checked here, before anything runs
            resolved = load_campaign(campaign, with_flags(overrides, **execution_flags(backend, workers, address)))
            if message := resolved.loading_message():
                console.print(message)
            runner = resolved.start(resume=resume, tracking_uri=tracking_uri)
            result = run_campaign(resolved, runner)
        except BaseException as exc:
            with shielded():  # a second Ctrl-C while the run is marked cannot cut the clean-up short
                if runner is not None:
                    runner.end(exc)  # the run ends KILLED or FAILED (a no-op when `run` already ended it)
                if isinstance(exc, KeyboardInterrupt):
                    errors.print(f"interrupted: {interrupted_hint(resolved)}")
            if isinstance(exc, KeyboardInterrupt):
                raise typer.Exit(130) from None
            raise
    summary = runner.summary(result)
    if summary is not None:
        table = Table(title=escaped(summary.title), title_justify="left")
        for column in summary.columns:
            table.add_column(escaped(column))
        for row in summary.rows:
            table.add_row(*map(escaped, row))
        console.print(table)
    if result.checkpoint:
        console.print(f"last checkpoint: {escaped(result.checkpoint)}")
    if result.run_id:
        console.print(
            f"MLflow run [bold]{result.run_id}[/] in {escaped(result.tracking_uri)}  "
            f"(browse with `{escaped(ui_hint(result.tracking_uri))}`)",
            soft_wrap=True,  # a command to copy: never cut into lines
        )


def interrupted_hint(resolved) -> str:
    """What to do after a Ctrl-C: resume, when the campaign's run had started (run.json names it)."""
    if resolved is not None and (resolved.checkpoint_dir / "run.json").exists():
        return f"continue with `{resolved.command()} --resume` (the run is marked KILLED)"
    return "the campaign had not started; nothing was recorded"


def run_campaign(resolved, runner):
    """`runner.run` with the live bar and one line per iteration."""
    if runner.tracker:
        console.print(f"MLflow run [bold]{runner.tracker.run_id}[/] in {runner.tracker.uri}")
    if runner.resumed_from:
        console.print(f"resuming from {runner.resumed_from}")
    from agora.rollout import ticks_to

    shown = runner.progress  # key -> label of the per-iteration line (the first is in the bar)
    with progress_bar() as progress:
        task = progress.add_task(resolved.name, total=resolved.iterations, completed=runner.first_iteration, live="")

        def report(i: int, metrics: dict[str, float]) -> None:
            description = resolved.name
            if shown:
                first, label = next(iter(shown.items()))
                description += f"  {label} {shown_value(metrics.get(first, float('nan')), 2)}"
            progress.update(task, completed=i + 1, description=description)
            line = f"iteration {i}: " + ", ".join(
                f"{label} {shown_value(metrics[k], 4)}" for k, label in shown.items() if k in metrics
            )
            if "perf/iteration_seconds" in metrics:
                line += f", {metrics['perf/iteration_seconds']:.0f} s"
            progress.console.print(line)

        with ticks_to(Ticks(progress, task)):
            return runner.run(report)


def shown_value(value: float, decimals: int) -> str:
    """A metric in the progress line: a count (an int) as an integer, a mean or a rate with `decimals`."""
    return f"{value:,}" if isinstance(value, int) else f"{value:.{decimals}f}"


def summary_table(resolved, summary: dict[str, float]) -> Table:
    from agora.overview import number, summary_rows

    title = escaped(f"{resolved.spec.name}: {plural(int(summary['perf/episodes']), 'episode')}")
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, _, value in summary_rows(resolved, summary):
        table.add_row(escaped(label), number(value))
    return table


@app.command()
def validate(
    args: list[str] = typer.Argument(
        ..., help="scenario or campaign files to check, and key=value overrides applied to each", show_default=False
    ),
    print_resolved: bool = typer.Option(
        False, "--print", help="print each file resolved (overrides and defaults applied) as YAML"
    ),
) -> None:
    """Check scenario and campaign files without running them."""
    import yaml

    from agora.campaign import load_campaign
    from agora.scenario import is_campaign, load_scenario, read_mapping, read_overrides

    files = [a for a in args if "=" not in a or Path(a).exists()]
    overrides = [a for a in args if a not in files]
    with user_errors():
        # `world.max_turns` (no '=') is an override missing its value, not a file: told as `agora run` tells it
        read_overrides(overrides + [a for a in files if looks_like_override(a)])  # told once, not once per file
        if not files:
            raise AgoraError(
                "no files to check: give scenario or campaign files, e.g. `agora validate scenarios/*.yaml`"
            )
    failed = printed = 0
    for file in files:
        try:
            if is_campaign(read_mapping(file, hint="copy a file in scenarios/ to start from")[0]):
                resolved = load_campaign(file, overrides)
                described = resolved.describe()
            else:
                resolved = load_scenario(file, overrides)
                seats = ", ".join(f"{a}={s.entry.name}" for a, s in resolved.seats.items())
                described = f"world {resolved.world_entry.name}, {seats}, {plural(resolved.spec.episodes, 'episode')}"
            config = resolved.file_config()
        except AgoraError as exc:
            failed += 1
            errors.print(f"[bold red]invalid:[/] {escaped(exc)}", highlight=False, soft_wrap=True)
            continue
        if print_resolved:  # the YAML alone on stdout (`ok` on stderr), so that it can be saved as a file
            errors.print(f"[green]ok[/] {escaped(file)}: {escaped(described)}", highlight=False, soft_wrap=True)
            plain = json.loads(json.dumps(config, default=str))  # tuples and paths as YAML lists and text
            separator = "---\n" if printed else ""
            printed += 1
            text = yaml.safe_dump(plain, sort_keys=False, allow_unicode=True, width=100)
            sys.stdout.write(f"{separator}# {file}, resolved\n{text}")
        else:
            console.print(f"[green]ok[/] {escaped(file)}: {escaped(described)}")
    if failed:
        raise typer.Exit(2)


def looks_like_override(arg: str) -> bool:
    """A dotted key without '=' (`world.max_turns`) rather than a file name: no such file, a dot, no folder, no
    YAML suffix."""
    return (
        "." in arg
        and not Path(arg).exists()
        and "/" not in arg
        and os.sep not in arg
        and not arg.lower().endswith((".yaml", ".yml"))
    )


@app.command()
def runs(
    tracking_uri: Optional[str] = typer.Option(
        None, help="store to list (default: $MLFLOW_TRACKING_URI, embedded store)"
    ),
    experiment: Optional[str] = typer.Option(None, help="only this experiment's runs"),
    limit: int = typer.Option(20, min=1, help="how many runs, newest first"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """List the newest runs of the MLflow store: id, experiment, name, status, start, duration, key metrics."""
    from agora.listing import list_runs
    from agora.tracking import resolve_uri

    uri = resolve_uri(tracking_uri)
    with user_errors():
        rows = list_runs(uri, experiment, limit)
    if as_json:
        records = [
            {
                "run_id": r.run_id,
                "experiment": r.experiment,
                "name": r.name,
                "status": r.status,
                "start_time": datetime.fromtimestamp(r.start_ms / 1000).astimezone().isoformat()
                if r.start_ms
                else None,
                "duration_s": (r.end_ms - r.start_ms) / 1000 if r.start_ms and r.end_ms else None,
                "metrics": r.metrics,
            }
            for r in rows or []
        ]
        sys.stdout.write(json.dumps(records, indent=1) + "\n")
        return
    if not rows:
        what = (
            "no store there yet" if rows is None else f"no runs{f' in experiment {experiment}' if experiment else ''}"
        )
        start = "agora run scenarios/negotiation_scripted.yaml"
        if uri != resolve_uri(None):
            start += f" --tracking-uri {shlex.quote(uri)}"
        console.print(f"{what}: {escaped(uri)}", soft_wrap=True)
        console.print(f"start one with `{escaped(start)}`", soft_wrap=True)  # a command to copy: never cut
        return
    full_ids = console.width >= 130  # a narrow terminal gets ids cut like git's short hashes (--json has them whole)
    when = "%Y-%m-%d %H:%M" if console.width >= 100 else "%m-%d %H:%M"
    table = Table(title=f"newest runs in {escaped(uri)}", title_justify="left", box=None, header_style="bold underline")
    table.add_column("run id" if full_ids else "run", no_wrap=True)
    table.add_column("name / experiment", overflow="fold")
    for column in ("status", "started", "duration"):
        table.add_column(column, no_wrap=True)
    table.add_column("key metrics", overflow="fold")
    for r in rows:
        started = datetime.fromtimestamp(r.start_ms / 1000).strftime(when) if r.start_ms else ""
        metrics = "\n".join(f"{k.split('/', 1)[-1]} {v:.4g}" for k, v in r.metrics.items())
        table.add_row(
            r.run_id if full_ids else r.run_id[:8],
            f"{escaped(r.name)}\n[dim]{escaped(r.experiment)}[/]",
            r.status,
            started,
            duration(r),
            escaped(metrics),
        )
    console.print(table)


def duration(row) -> str:
    """`12 s`, `3 min 5 s`, `2 h 10 min`; `running` for a run that has not ended."""
    if not row.start_ms or not row.end_ms:
        return "running" if row.status == "RUNNING" else ""
    seconds = round((row.end_ms - row.start_ms) / 1000)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


@app.command()
def env(
    tracking_uri: Optional[str] = typer.Option(None, help="store to report (default: $MLFLOW_TRACKING_URI, embedded)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON (for bug reports)"),
) -> None:
    """Versions of Python, torch, CUDA, transformers, MLflow, ..., the tracking store and the model cache."""
    from agora.system import system_report

    report = system_report(tracking_uri)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=1) + "\n")
        return
    model = report["embedded_model"]
    state = "not installed (`make setup`)"
    if model["converted"]:
        state = f"ready in {model['path']}"
    elif model["package_installed"]:
        state = "installed (converted on first use, ~20 s)"
    cuda = "no (CPU build of torch)"
    if report["cuda_available"]:
        cuda = f"yes (CUDA {report['cuda_version']}: {', '.join(report['cuda_devices'])})"
    elif report["cuda_version"]:
        cuda = f"no (torch built with CUDA {report['cuda_version']})"
    rows = [
        ("agora", report["agora"]),
        ("python", report["python"]),
        ("platform", report["platform"]),
        *((name, version or "not installed") for name, version in report["packages"].items()),
        ("CUDA", cuda),
        ("MPS", "yes" if report["mps_available"] else "no"),
        ("tracking URI", report["tracking_uri"]),
        ("model cache", report["model_cache"]),
        ("embedded model", f"{model['name']}: {state}"),
    ]
    table = Table(title="Agora's environment", title_justify="left", show_header=False, box=box.SIMPLE)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in rows:
        table.add_row(name, escaped(value))
    console.print(table)


def type_name(annotation) -> str:
    """`int`, `list[str]`, `auto | float32 | ...` (a Literal's allowed values) for the listings."""
    if get_origin(annotation) is Literal:
        return " | ".join(map(str, get_args(annotation)))
    if isinstance(annotation, type) and not get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def params_table(title: str, model: type[BaseModel]) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False)
    for column in ("parameter", "type", "default", "description"):
        table.add_column(column)
    for name, field in model.model_fields.items():
        annotation = type_name(field.annotation)
        default = "(required)" if field.default is PydanticUndefined else repr(field.default)
        table.add_row(name, escape(annotation), escape(default), escape(field.description or ""))
    return table


def entry_title(entry) -> str:
    """`name (world: w) — summary [from origin]` for the listings; a plug-in that fails to load says why."""
    scope = f" [dim](world: {entry.world})[/]" if entry.world else ""
    origin = f" [dim]\\[from {escape(entry.origin)}][/]" if entry.origin != ORIGIN else ""
    return f"[bold]{entry.name}[/]{scope} — {escape(entry.summary)}{origin}"


def list_entries(entries) -> None:
    for entry in entries:
        try:
            console.print(params_table(entry_title(entry), entry.config))
        except AgoraError as exc:  # a broken plug-in: listed with its error, the others still shown
            errors.print(f"[bold red]{entry.name}[/] [dim]\\[from {escape(entry.origin)}][/]: {escape(str(exc))}")


@app.command()
def worlds() -> None:
    """List the registered worlds (Agora's and plug-ins') and their parameters."""
    from agora.registry import WORLDS

    list_entries(WORLDS.entries())


@app.command()
def agents(world: Optional[str] = typer.Option(None, help="only agents that can play this world")) -> None:
    """List the registered agents (policies; Agora's and plug-ins') and their parameters."""
    from agora.registry import AGENTS, WORLDS

    with user_errors():
        if world:
            WORLDS.get(world)
        list_entries(AGENTS.entries(world))


@app.command()
def trainers() -> None:
    """List the campaign kinds (a campaign file's `kind:`), the trainers and their hyperparameters (`trainer:` keys)."""
    from agora.registry import CAMPAIGNS, TRAINERS

    kinds = Table(title="campaign kinds (a campaign file's `kind:`; default train)", title_justify="left")
    for column in ("kind", "what it runs", "origin"):
        kinds.add_column(column)
    for entry in CAMPAIGNS.entries():
        try:
            kinds.add_row(entry.name, escape(entry.summary), escape(entry.origin))
        except AgoraError as exc:
            kinds.add_row(entry.name, escape(str(exc)), escape(entry.origin))
    console.print(kinds)
    list_entries(TRAINERS.entries())


@app.command()
def ui(
    host: str = typer.Option("127.0.0.1", help="address to serve on"),
    port: int = typer.Option(5000, help="port to serve on"),
    tracking_uri: Optional[str] = typer.Option(
        None, help="store to browse (default: $MLFLOW_TRACKING_URI, embedded store)"
    ),
) -> None:
    """Serve the MLflow UI over the tracking store."""
    from agora.tracking import resolve_uri, serve_ui

    uri = resolve_uri(tracking_uri)
    console.print(f"MLflow UI for {uri} on http://{host}:{port}  (Ctrl-C to stop)")
    with user_errors():
        serve_ui(uri, host, port)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
