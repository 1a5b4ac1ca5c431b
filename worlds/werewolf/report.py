"""Werewolf's records: episode metrics and facts, and the run report (vote and accusation graphs).

`WerewolfRecords` is a mixin of `raw_env` (worlds/werewolf/world.py); it reads the finished game's
state (`config`, `n`, `names`, `seating`, `roles`, `alive`, `votes`, `deaths`, `events`, `day`, `winner`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from agora.world import Report
from worlds.werewolf.rules import ROLES, SEER, WEREWOLF, plurality, role_of


class WerewolfRecords:
    """Episode metrics, episode info and the run report of the werewolf world."""

    # labels of episode metrics in `agora run`'s summary table (the rest show their keys)
    metric_labels = {
        "win/village": "village win rate",
        "win/werewolves": "werewolf win rate",
        "draw": "draw rate (day limit)",
        "days": "days per game",
        "vote_accuracy": "village votes on a werewolf",
        "wolf_detection": "day-1 vote leaders who are werewolves",
        "seer_survival": "seer survival rate",
    }

    def village_votes(self, day: int | None = None) -> list[tuple[int, int]]:
        """(voter, target) of every non-abstaining vote cast by a village-team player (on `day`, if given)."""
        days = range(self.config.max_days) if day is None else [day - 1]
        return [
            (v, int(t))
            for d in days
            for v, t in enumerate(self.votes[d])
            if 0 <= t < self.n and self.roles[v] != WEREWOLF
        ]

    def episode_metrics(self) -> dict[str, float]:
        """Outcome, `days` (the day or night the game ended on), vote accuracy
        (village votes on werewolves / village votes), wolf detection (share of werewolves among the
        players the village voted most on day 1), seer survival."""
        wolf = self.roles == WEREWOLF
        metrics = {
            "win/village": float(self.winner == "village"),
            "win/werewolves": float(self.winner == "werewolves"),
            "draw": float(self.winner == "draw"),
            "days": float(self.day),
        }
        votes = self.village_votes()
        if votes:
            metrics["vote_accuracy"] = float(np.mean([wolf[t] for _, t in votes]))
        first = plurality([t for _, t in self.village_votes(1)])
        if first:
            metrics["wolf_detection"] = float(np.mean([wolf[t] for t in first]))
        seers = [p for p in range(self.n) if self.roles[p] == SEER]
        if seers:
            metrics["seer_survival"] = float(np.mean([self.alive[p] for p in seers]))
        return metrics

    def episode_info(self) -> dict[str, Any]:
        """Who was who, every statement, vote and death (positions with their seats and names)."""

        def who(p: int) -> dict[str, Any] | None:
            return {"name": self.names[p], "seat": self.seating[p]} if 0 <= p < self.n else None

        return {
            "winner": self.winner,
            "days": self.day,
            "players": [
                {"position": p, **who(p), "role": ROLES[self.roles[p]], "alive": bool(self.alive[p])}
                for p in range(self.n)
            ],
            "deaths": [{**d, **who(d["position"])} for d in self.deaths],
            "statements": [
                {"day": e["day"], "speaker": who(e["speaker"]), "accused": who(e["target"]), "text": e["text"]}
                for e in self.events
                if e["kind"] == "statement"
            ],
            "votes": [
                {"day": e["day"], "voter": who(e["voter"]), "target": who(e["target"])}
                for e in self.events
                if e["kind"] == "vote"
            ],
        }

    def run_report(self, episodes: list) -> Report:
        """Per-day vote and accusation graphs over all episodes (networkx DiGraphs between seats, edge
        weight = number of votes/accusations), drawn as figures and written as edge lists; the share of
        village votes on werewolves per day as a metric series (step = day)."""
        import networkx as nx

        graphs: dict[str, dict[int, nx.DiGraph]] = {"votes": {}, "accusations": {}}
        for episode in episodes:
            for kind, key, source in (("votes", "votes", "voter"), ("accusations", "statements", "speaker")):
                for event in episode.info.get(key, []):
                    target = event["target" if kind == "votes" else "accused"]
                    if target is None:
                        continue
                    graph = graphs[kind].setdefault(event["day"], nx.DiGraph())
                    u, v = event[source]["seat"], target["seat"]
                    weight = graph.get_edge_data(u, v, {"weight": 0})["weight"]
                    graph.add_edge(u, v, weight=weight + 1)
        report = Report()
        for kind, by_day in graphs.items():
            if not by_day:
                continue
            report.texts[f"werewolf/{kind}_edges.txt"] = edge_lists(by_day, kind)
            report.figures[f"werewolf/{kind}_graphs.png"] = draw_day_graphs(by_day, self.possible_agents, kind)
        accuracy = defaultdict(list)
        for episode in episodes:
            for event in episode.info.get("votes", []):
                if event["target"] is not None and role_of(event["voter"]["seat"]) != WEREWOLF:
                    accuracy[event["day"]].append(role_of(event["target"]["seat"]) == WEREWOLF)
        report.series["day/vote_accuracy"] = [(day, float(np.mean(v))) for day, v in sorted(accuracy.items())]
        report.tables["werewolf/games.json"] = {
            "episode": [e.index for e in episodes],
            "winner": [e.info.get("winner") for e in episodes],
            "days": [e.info.get("days") for e in episodes],
            "roles": [", ".join(f"{p['name']}={p['role']}" for p in e.info.get("players", [])) for e in episodes],
            "deaths": [
                ", ".join(f"{d['name']} ({d['cause']} {d['day']})" for d in e.info.get("deaths", [])) for e in episodes
            ],
        }
        return report


def edge_lists(by_day: dict[int, Any], kind: str) -> str:
    """'# day d' blocks of 'source target weight' lines (networkx's edge-list format)."""
    import networkx as nx

    lines = [f"# {kind}: source target weight, summed over the run's episodes"]
    for day, graph in sorted(by_day.items()):
        lines.append(f"# day {day}")
        lines += sorted(nx.generate_edgelist(graph, data=["weight"]))
    return "\n".join(lines) + "\n"


def draw_day_graphs(by_day: dict[int, Any], seats: list[str], kind: str):
    """One panel per day (at most 6): seats on a circle, werewolves red, arrow width ~ weight."""
    import networkx as nx
    from matplotlib.figure import Figure

    days = sorted(by_day)[:6]
    figure = Figure(figsize=(4 * len(days), 4.2))
    layout = nx.circular_layout(seats)
    for i, day in enumerate(days):
        ax = figure.add_subplot(1, len(days), i + 1)
        graph = by_day[day]
        graph.add_nodes_from(seats)
        top = max(w for _, _, w in graph.edges(data="weight"))
        colors = ["tab:red" if role_of(s) == WEREWOLF else "tab:blue" for s in graph.nodes]
        nx.draw_networkx_nodes(graph, layout, ax=ax, node_color=colors, node_size=500, alpha=0.8)
        nx.draw_networkx_labels(graph, layout, ax=ax, font_size=7)
        widths = [0.5 + 4 * w / top for _, _, w in graph.edges(data="weight")]
        nx.draw_networkx_edges(
            graph, layout, ax=ax, width=widths, arrows=True, arrowsize=12, connectionstyle="arc3,rad=0.1", node_size=500
        )
        ax.set_title(f"day {day} {kind}")
        ax.set_axis_off()
    figure.tight_layout()
    return figure
