"""The `agora` command: run, train, validate, worlds, agents, trainers, ui."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Literal, Optional, get_args, get_origin

import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from agora.errors import AgoraError
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


def progress_bar(disable: bool = False) -> Progress:
    """The live bar of every long CLI loop: description, bar, done/total, elapsed and remaining time."""
    columns = (
        TextColumn("{task.description}", style="bold", markup=False),  # names are the user's text, not markup
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    return Progress(*columns, console=console, disable=disable)


@app.command()
def run(
    scenario: Path = typer.Argument(..., help="scenario YAML file"),
    episodes: Optional[int] = typer.Option(None, help="override `episodes`"),
    seed: Optional[int] = typer.Option(None, help="override `seed`"),
    concurrency: Optional[int] = typer.Option(None, help="override `concurrency`"),
    tracking_uri: Optional[str] = typer.Option(
        None, help="MLflow tracking URI (default: scenario, $MLFLOW_TRACKING_URI, embedded store)"
    ),
    no_track: bool = typer.Option(False, "--no-track", help="do not record the run in MLflow"),
) -> None:
    """Play a scenario's episodes and record them in MLflow."""
    from agora.run import run_scenario
    from agora.scenario import load_scenario

    overrides = {
        k: v for k, v in {"episodes": episodes, "seed": seed, "concurrency": concurrency}.items() if v is not None
    }
    result = None
    try:
        with user_errors(), interruptible():
            resolved = load_scenario(scenario, overrides)
            spec = resolved.spec
            # A person typing (a policy with `interactive = True`) and a live bar would garble each other.
            interactive = any(seat.entry.load().interactive for seat in resolved.seats.values())
            with progress_bar(disable=interactive) as progress:
                task = progress.add_task(f"loading {spec.name}", total=spec.episodes)
                result = run_scenario(
                    resolved,
                    tracking_uri=tracking_uri,
                    track=False if no_track else None,
                    on_episode=lambda _: progress.update(task, advance=1, description=spec.name),
                )
                progress.update(task, description=spec.name)
            console.print(summary_table(resolved, result.summary))
            if result.run_id:
                console.print(f"MLflow run [bold]{result.run_id}[/] in {result.tracking_uri}  (browse with `agora ui`)")
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
    resume: bool = typer.Option(False, "--resume", help="continue from the last checkpoint, into the same MLflow run"),
    tracking_uri: Optional[str] = typer.Option(
        None, help="MLflow tracking URI (default: campaign, $MLFLOW_TRACKING_URI, embedded store)"
    ),
) -> None:
    """Run a training campaign of any kind (train, psro, lspo, ...): iterations, checkpoints, MLflow."""
    from agora.campaign import load_campaign, shielded

    with user_errors(), interruptible():
        resolved = runner = None
        try:
            resolved = load_campaign(campaign)  # paths are checked here, before anything runs
            if message := resolved.loading_message():
                console.print(message)
            runner = resolved.start(resume=resume, tracking_uri=tracking_uri)
            result = run_campaign(resolved, runner)
        except BaseException as exc:
            with shielded():  # a second Ctrl-C while the run is marked cannot cut the clean-up short
                if runner is not None:
                    runner.end(exc)  # the run ends KILLED or FAILED (a no-op when `run` already ended it)
                if isinstance(exc, KeyboardInterrupt):
                    errors.print(f"interrupted: {interrupted_hint(resolved, campaign)}")
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
        console.print(f"last checkpoint: {result.checkpoint}")
    if result.run_id:
        console.print(f"MLflow run [bold]{result.run_id}[/] in {result.tracking_uri}  (browse with `agora ui`)")


def interrupted_hint(resolved, file: Path) -> str:
    """What to do after a Ctrl-C: resume, when the campaign's run had started (run.json names it)."""
    if resolved is not None and (resolved.checkpoint_dir / "run.json").exists():
        return f"continue with `agora train {file} --resume` (the run is marked KILLED)"
    return "the campaign had not started; nothing was recorded"


def run_campaign(resolved, runner):
    """`runner.run` with the live bar and one line per iteration."""
    if runner.tracker:
        console.print(f"MLflow run [bold]{runner.tracker.run_id}[/] in {runner.tracker.uri}")
    if runner.resumed_from:
        console.print(f"resuming from {runner.resumed_from}")
    shown = runner.progress  # key -> label of the per-iteration line (the first is in the bar)
    with progress_bar() as progress:
        task = progress.add_task(resolved.name, total=resolved.iterations, completed=runner.first_iteration)

        def report(i: int, metrics: dict[str, float]) -> None:
            description = resolved.name
            if shown:
                first, label = next(iter(shown.items()))
                description += f"  {label} {metrics.get(first, float('nan')):.2f}"
            progress.update(task, completed=i + 1, description=description)
            line = f"iteration {i}: " + ", ".join(
                f"{label} {metrics[k]:.4f}" for k, label in shown.items() if k in metrics
            )
            if "perf/iteration_seconds" in metrics:
                line += f", {metrics['perf/iteration_seconds']:.0f} s"
            progress.console.print(line)

        return runner.run(report)


def summary_table(resolved, summary: dict[str, float]) -> Table:
    from agora.overview import number, summary_rows

    title = escaped(f"{resolved.spec.name}: {int(summary['perf/episodes'])} episodes")
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, _, value in summary_rows(resolved, summary):
        table.add_row(escaped(label), number(value))
    return table


@app.command()
def validate(files: list[Path] = typer.Argument(..., help="scenario or campaign files to check")) -> None:
    """Check scenario and campaign files without running them."""
    from agora.campaign import load_campaign
    from agora.scenario import is_campaign, load_scenario, read_mapping

    failed = 0
    for file in files:
        try:
            if is_campaign(read_mapping(file, hint="copy a file in scenarios/ to start from")[0]):
                console.print(f"[green]ok[/] {escaped(file)}: {escaped(load_campaign(file).describe())}")
                continue
            resolved = load_scenario(file)
        except AgoraError as exc:
            failed += 1
            errors.print(f"[bold red]invalid:[/] {escaped(exc)}", highlight=False, soft_wrap=True)
            continue
        seats = ", ".join(f"{a}={s.entry.name}" for a, s in resolved.seats.items())
        described = f"world {resolved.world_entry.name}, {seats}, {resolved.spec.episodes} episodes"
        console.print(f"[green]ok[/] {escaped(file)}: {escaped(described)}")
    if failed:
        raise typer.Exit(2)


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
