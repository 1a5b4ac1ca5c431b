"""What every learning experiment of bench/learning/ shares: arms run at one budget, held-out games paired by seed.

An experiment is a list of `Arm`s: campaign files (with key overrides) that differ only in what is compared (the
trainer, the reward, the matchmaking rule, the training opponent) and share the schedule, seed, model, LoRA
initialisation and optimiser. Each arm's campaign evaluates on the same held-out seeds before its first and after its
last iteration (`evaluation:` of the file); `run_arm` keeps every one of those games, so that

- after - before is paired by held-out seed (the same initial state and sampler seed, the untrained learner against
  the trained one): the effect of training;
- arm - baseline arm, after training, is paired by held-out seed too: the effect of the method at equal budget.

Intervals are Student-t 95% intervals of the paired differences (scores and win indicators: 1 beats every other
seat, 0.5 ties the best, 0 loses). `compare` prints the table and logs it, every held-out game, what the arms'
`collect` read and a figure to MLflow (experiment `bench-learning`).
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

EXPERIMENT = "bench-learning"


@dataclass
class Arm:
    """One side of a comparison: a campaign file and the keys that make it this arm (dotted, as on the command
    line: `{"trainer.estimator": "gigpo"}`)."""

    name: str
    file: str
    changes: dict[str, Any] = field(default_factory=dict)
    # (runner, result) -> what else this experiment reads from the finished campaign (a league's ratings, ...):
    # kept in the arm's row under "extra"
    collect: Callable[[Any, Any], dict] | None = None


def t_interval(values) -> tuple[float, float, float]:
    """Mean and its 95% Student-t interval (nan bounds below two values)."""
    from scipy import stats

    x = np.asarray(list(values), dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    if len(x) < 2:
        return float(x.mean()), float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean()), float(x.mean() - half), float(x.mean() + half)


def win_interval(wins: list[float]) -> tuple[float, float, float]:
    """Win rate (ties count half) and its Wilson 95% interval."""
    from campaigns.evaluation import wilson_interval

    if not wins:
        return float("nan"), float("nan"), float("nan")
    return (float(np.mean(wins)), *wilson_interval(float(np.sum(wins)), len(wins)))


def paired(after: list[dict], before: list[dict], key: str = "score") -> tuple[float, float, float]:
    """t interval of after[key] - before[key] over the held-out seeds both played."""
    theirs = {g["seed"]: g[key] for g in before}
    return t_interval(g[key] - theirs[g["seed"]] for g in after if g["seed"] in theirs)


def held_out_games(played: dict[str, list], seats: list[str]) -> dict[str, list[dict]]:
    """opponent -> one record per held-out game: seed, the learner's score and win, turns, the world's metrics."""
    from campaigns.evaluation import episode_outcome

    out = {}
    for name, episodes in played.items():
        rows = []
        for e in episodes:
            score, win = episode_outcome(e, seats)
            rows.append({"seed": e.seed, "score": score, "win": win, "turns": len(e.steps), **e.metrics})
        out[name] = rows
    return out


def command_line(doc: str, file: str, what: str) -> argparse.ArgumentParser:
    """An experiment's command line: `--file` (default `file`, "the <what> campaign file"), `--tracking-uri` and the
    KEY=VALUE overrides set in every arm's campaign; the script adds its own flags before parsing."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--file", default=file, help=f"the {what} campaign file")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: the embedded one)")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE set in every arm's campaign (e.g. iterations=2)")
    return parser


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE strings (values read as YAML) -> a dict of overrides."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"override {item!r} is not KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def run_arm(arm: Arm, overrides: dict[str, Any], uri: str | None, folder: Path) -> dict:
    """Run one arm's campaign (checkpoints under `folder/<arm>`); its first and final evaluation (metrics and every
    game), training history and wall time."""
    from agora.campaign import load_campaign

    changes = {**arm.changes, **overrides, "checkpoint.dir": str(folder / arm.name)}
    campaign = load_campaign(arm.file, changes)
    start = time.perf_counter()
    runner = campaign.start(tracking_uri=uri)
    result = runner.run()
    seconds = time.perf_counter() - start
    first, last = min(runner.played_at), max(runner.played_at)
    seats = campaign.eval_seats
    return {
        "arm": arm.name,
        "seconds": seconds,
        "run_id": result.run_id,
        "first": result.evaluations[first],
        "final": result.evaluations[last],
        "history": {i: m.get("train/reward/learner", float("nan")) for i, m in sorted(result.history.items())},
        "before": held_out_games(runner.played_at[first], seats),
        "after": held_out_games(runner.played_at[last], seats),
        "extra": arm.collect(runner, result) if arm.collect else {},
    }


def fmt(interval: tuple[float, float, float], sign: bool = False) -> str:
    m, lo, hi = interval
    f = "{:+.2f}" if sign else "{:.2f}"
    return f"{f.format(m)} [{f.format(lo)}, {f.format(hi)}]"


COLUMNS = ("arm", "opponent", "games", "score_before", "score", "score_low", "score_high", "delta", "delta_low")
COLUMNS += ("delta_high", "win_before", "win", "win_low", "win_high", "win_delta", "win_delta_low", "win_delta_high")
COLUMNS += ("vs_baseline", "vs_baseline_low", "vs_baseline_high", "win_vs_baseline", "win_vs_baseline_low")
COLUMNS += ("win_vs_baseline_high", "parse_fail", "seconds")


def report(rows: list[dict], baseline: str | None = None, extra: tuple[str, ...] = ()) -> tuple[list[str], dict]:
    """Markdown lines and table columns: per arm and opponent, the held-out score and win rate before and after
    training with 95% intervals, the paired after - before differences, and the paired difference to the
    `baseline` arm after training; `extra`: world metrics (e.g. agreement) shown before -> after."""
    table: dict[str, list] = {k: [] for k in COLUMNS + tuple(extra)}
    base = next((r for r in rows if r["arm"] == baseline), None)
    head = "| arm | opponent | games | score before | score after | after - before | win before | win after | "
    head += "win after - before |"
    rule = "|---|---|---|---|---|---|---|---|---|"
    if base is not None:
        head += f" score - {baseline} | win - {baseline} |"
        rule += "---|---|"
    head += "".join(f" {k} |" for k in extra) + " parse fail | run s |"
    rule += "---|" * (len(extra) + 2)
    lines = [head, rule]
    for row in rows:
        for name, after in row["after"].items():
            before = row["before"][name]
            score = t_interval(g["score"] for g in after)
            win = win_interval([g["win"] for g in after])
            delta, win_delta = paired(after, before), paired(after, before, "win")
            vs = win_vs = (float("nan"),) * 3
            cells = [
                row["arm"],
                name,
                str(len(after)),
                f"{np.mean([g['score'] for g in before]):.2f}",
                fmt(score),
                fmt(delta, True),
                f"{np.mean([g['win'] for g in before]):.2f}",
                fmt(win),
                fmt(win_delta, True),
            ]
            if base is not None:
                if row is not base:
                    vs, win_vs = paired(after, base["after"][name]), paired(after, base["after"][name], "win")
                cells += ["-", "-"] if row is base else [fmt(vs, True), fmt(win_vs, True)]
            extras = {}
            for key in extra:
                b = np.mean([g.get(key, np.nan) for g in before])
                a = np.mean([g.get(key, np.nan) for g in after])
                extras[key] = a
                cells.append(f"{b:.2f} -> {a:.2f}")
            parse_fail = row["final"].get(f"eval/{name}/parse_failure_rate", float("nan"))
            cells += [f"{parse_fail:.3f}", f"{row['seconds']:.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
            values = (row["arm"], name, len(after), np.mean([g["score"] for g in before]), *score, *delta)
            values += (np.mean([g["win"] for g in before]), *win, *win_delta, *vs, *win_vs, parse_fail, row["seconds"])
            for key, value in zip(COLUMNS, values):
                table[key].append(value)
            for key in extra:
                table[key].append(extras[key])
    return lines, table


def figure(rows: list[dict], title: str):
    """Held-out score before (black mark) and after training (bar, 95% interval) per arm and opponent; the
    learner's training reward per iteration."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax, curve = fig.subplots(1, 2)
    opponents = list(rows[0]["after"])
    width = 0.8 / max(len(rows), 1)
    for k, row in enumerate(rows):
        xs = np.arange(len(opponents)) + k * width
        stats = [t_interval(g["score"] for g in row["after"][o]) for o in opponents]
        errors = [[s[0] - s[1] for s in stats], [s[2] - s[0] for s in stats]]
        ax.bar(xs, [s[0] for s in stats], width, yerr=np.nan_to_num(errors), capsize=3, label=row["arm"])
        before = [np.mean([g["score"] for g in row["before"][o]]) for o in opponents]
        ax.scatter(xs, before, color="black", marker="_", s=120)
        curve.plot(list(row["history"]), list(row["history"].values()), marker="o", label=row["arm"])
    ax.set_xticks(np.arange(len(opponents)) + width * (len(rows) - 1) / 2, opponents)
    ax.set(title=title, ylabel="held-out score after training (95% CI; - before)")
    ax.legend()
    curve.set(xlabel="iteration", ylabel="training reward of the learner")
    curve.legend()
    return fig


def scalar(value: Any) -> bool:
    """A number, a string, a bool or None: a cell of an MLflow table (a list of records is not)."""
    return value is None or isinstance(value, (int, float, str, bool))


def log_extra(tracker: Any, rows: list[dict], tag: str) -> None:
    """What the arms' `collect` read (each row's "extra"): one table, a row per arm (`learning/<tag>_extra.json`),
    and every finite number as metric `<arm>/<key>`."""
    keys = list(dict.fromkeys(k for r in rows for k, v in r["extra"].items() if scalar(v)))
    if not keys:
        return
    tracker.log_table(
        {"arm": [r["arm"] for r in rows], **{k: [r["extra"].get(k) for r in rows] for k in keys}},
        f"learning/{tag}_extra.json",
    )
    tracker.log_metrics(
        {
            f"{r['arm']}/{k}": float(v)
            for r in rows
            for k, v in r["extra"].items()
            if isinstance(v, (int, float)) and np.isfinite(v)
        }
    )


def compare(
    tag: str,
    arms: list[Arm],
    *,
    overrides: list[str] = (),
    uri: str | None = None,
    baseline: str | None = None,
    extra: tuple[str, ...] = (),
    title: str = "",
    checkpoints: str = "checkpoints/bench",
) -> dict:
    """Run `arms` one after the other with the same `overrides`, print the comparison and log it to MLflow (run
    `tag` of experiment `bench-learning`). Returns {"rows", "lines", "table", "run_id"}."""
    from agora.tracking import Tracker

    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    folder = Path(checkpoints) / f"{tag}-{stamp}"
    changes = parse_overrides(list(overrides))
    rows = [run_arm(arm, changes, uri, folder) for arm in arms]
    lines, table = report(rows, baseline, extra)
    for r in rows:
        numbers = {k: v for k, v in r["extra"].items() if isinstance(v, (int, float))}
        if numbers:
            lines.append(f"{r['arm']}: " + ", ".join(f"{k} {v:.3g}" for k, v in numbers.items()))
    print("\n".join(lines))
    tracker = Tracker(uri, EXPERIMENT, tag, {"agora.bench": tag})
    tracker.log_params(
        {"arms": ",".join(a.name for a in arms), "overrides": " ".join(overrides), "baseline": baseline or "-"}
    )
    tracker.log_params({f"arm/{a.name}": f"{a.file} {a.changes}"[:500] for a in arms})
    tracker.log_params({f"run/{r['arm']}": r["run_id"] or "-" for r in rows})
    tracker.log_metrics(
        {
            f"{table['arm'][i]}/{key}/{table['opponent'][i]}": float(table[key][i])
            for i in range(len(table["arm"]))
            for key in ("score", "delta", "win", "win_delta", "vs_baseline")
            if np.isfinite(table[key][i])
        }
    )
    tracker.log_table(copy.deepcopy(table), f"learning/{tag}.json")
    log_extra(tracker, rows, tag)
    games = [
        (r["arm"], when, o, g) for r in rows for when in ("before", "after") for o, gs in r[when].items() for g in gs
    ]
    tracker.log_table(
        {
            "arm": [a for a, _, _, _ in games],
            "when": [w for _, w, _, _ in games],
            "opponent": [o for _, _, o, _ in games],
            **{k: [g[k] for *_, g in games] for k in ("seed", "score", "win", "turns")},
        },
        f"learning/{tag}_games.json",
    )
    tracker.log_figure(figure(rows, title or tag), f"figures/{tag}.png")
    tracker.end()
    print(f"MLflow run {tracker.run_id} ({EXPERIMENT}/{tag}) in {tracker.uri}")
    return {"rows": rows, "lines": lines, "table": table, "run_id": tracker.run_id}
