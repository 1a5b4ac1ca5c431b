"""The economy's records: episode metrics and facts, and the run report (per-step series, the
schedule plot, and the comparison with Saez, US federal and flat schedules and the Stackelberg optimum on the same
population).

`EconomyRecords` is a mixin of `parallel_env` (worlds/economy/world.py); it reads the finished
episode's `log`, `rates`, `decisions`, `elections`, `skills` and `personas`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agora.world import Report
from worlds.economy.rules import PERSONAS, fixed_schedule_welfare
from worlds.economy.stackelberg import baseline_welfare
from worlds.economy.text import money


class EconomyRecords:
    """Episode metrics, episode info and the run report of the economy world."""

    # labels of the metrics every run has, in `agora run`'s summary table (the rest, e.g. persona scaling's
    # `satisfied` or the election's, show their keys)
    metric_labels = {
        "swf": "social welfare (mean per step)",
        "planner_swf": "social welfare under the planner",
        "mean_utility": "mean worker utility",
        "mean_labor": "mean hours worked",
        "total_income": "total pre-tax income",
        "tax_revenue": "tax revenue",
        "gini_pre": "Gini before tax",
        "gini_post": "Gini after tax and rebate",
        "br_gap": "workers' gap to best-response utility",
    }

    def episode_metrics(self) -> dict[str, float]:
        """Means over the episode's steps, the last schedule, and the LLM-rationality gap."""
        metrics = {k: float(np.mean(v)) for k, v in self.log.items() if k != "rates" and v}
        planned = self.log["swf"][self.config.warmup :]
        metrics["planner_swf"] = float(np.mean(planned)) if planned else 0.0
        metrics.update({f"rate/b{j}": float(r) for j, r in enumerate(self.rates)})
        if self.config.democratic:
            metrics["election/count"] = float(len(self.elections))
            for key in ("candidate_share", "turnout"):
                metrics[f"election/{key}"] = float(np.mean([e[key] for e in self.elections])) if self.elections else 0.0
        return metrics

    def episode_info(self) -> dict[str, Any]:
        """Per-step series, the planner's decision steps, and the population (skills, personas)."""
        keys = list(PERSONAS)
        return {
            "series": {k: list(v) for k, v in self.log.items()},
            "decisions": list(self.decisions),
            "elections": list(
                self.elections
            ),  # democratic mode: candidates, platforms, votes, winner, platform per period
            "skills": self.skills.tolist(),
            "personas": [{k: PERSONAS[k][int(i)] for k, i in zip(keys, row)} for row in self.personas],
        }

    def run_report(self, episodes: list) -> Report:
        """Per-step series averaged over episodes, the schedule plot, and the comparison table:
        the planner's SWF vs Saez, US federal and flat schedules on each episode's population."""
        from matplotlib.figure import Figure

        c = self.config
        series = [e.info["series"] for e in episodes if e.info.get("series")]
        report = Report()
        if not series:
            return report
        steps = min(len(s["swf"]) for s in series)
        names = ["swf", "mean_utility", "total_income", "tax_revenue", "gini_pre", "gini_post", "mean_labor", "br_gap"]
        for name in names:
            mean = np.mean([s[name][:steps] for s in series], axis=0)
            report.series[f"step/{name}"] = [(t, float(v)) for t, v in enumerate(mean)]
        rates = np.mean([np.asarray(s["rates"][:steps]) for s in series], axis=0)  # (steps, B)
        for j in range(rates.shape[1]):
            report.series[f"schedule/b{j}"] = [(t, float(v)) for t, v in enumerate(rates[:, j])]

        figure = Figure(figsize=(8, 6))
        top, bottom = figure.subplots(2, 1, sharex=True)
        uppers = [*self.cutoffs[1:], None]
        for j in range(rates.shape[1]):
            label = (
                f"{money(self.cutoffs[j])}+" if uppers[j] is None else f"{money(self.cutoffs[j])}-{money(uppers[j])}"
            )
            top.step(np.arange(steps), rates[:, j], where="post", label=label)
        top.set_ylabel("marginal rate (%)")
        top.set_title(f"Tax schedule per bracket (mean over {len(series)} episode{'s' if len(series) > 1 else ''})")
        top.legend(fontsize="small", ncol=2)
        bottom.plot(np.arange(steps), np.mean([s["swf"][:steps] for s in series], axis=0))
        bottom.set_xlabel("step")
        bottom.set_ylabel("social welfare")
        figure.tight_layout()
        report.figures["economy/schedule.png"] = figure

        columns = ("planner", "planner_final_br", "saez", "us_federal", "flat", "optimum", "optimum_lattice")
        table: dict[str, list] = {k: [] for k in ("episode", "seed", *columns, "optimum_rates")}
        for episode in episodes:
            if not episode.info.get("skills"):
                continue
            skills = np.asarray(episode.info["skills"])
            final = episode.info["series"]["rates"][-1]
            table["episode"].append(episode.index)
            table["seed"].append(episode.seed)
            table["planner"].append(episode.metrics.get("planner_swf", float("nan")))
            table["planner_final_br"].append(fixed_schedule_welfare(skills, self.cutoffs, final, c)["swf"])
            for name, value in baseline_welfare(skills, self.cutoffs, c, optimum=c.comparison_optimum).items():
                table[name].append(value)
        report.tables["economy/comparison.json"] = table
        elections = [(e.index, x) for e in episodes for x in e.info.get("elections") or []]
        if elections:
            report.tables["economy/elections.json"] = {
                "episode": [i for i, _ in elections],
                "step": [x["step"] for _, x in elections],
                "winner": [x["winner"] for _, x in elections],
                "platform": [x["platform"] for _, x in elections],
                "candidate_share": [x["candidate_share"] for _, x in elections],
                "turnout": [x["turnout"] for _, x in elections],
            }
            first = [x for i, x in elections if i == elections[0][0]]  # the winning platform over time, first episode
            for j in range(len(self.cutoffs)):
                report.series[f"election/platform/b{j}"] = [(x["step"], float(x["platform"][j])) for x in first]
        if not table["optimum"]:
            for name in ("optimum", "optimum_lattice", "optimum_rates"):
                del table[name]
        for name in columns:
            if table.get(name):
                report.metrics[f"compare/{name}_swf"] = float(np.mean(table[name]))
        if table["saez"]:
            report.metrics["compare/planner_minus_saez"] = (
                report.metrics["compare/planner_swf"] - report.metrics["compare/saez_swf"]
            )
        if table.get("optimum"):  # the share of the optimum's welfare the planner's final schedule reaches
            report.metrics["compare/planner_over_optimum"] = float(
                np.mean(table["planner_final_br"]) / np.mean(table["optimum"])
            )
        return report
