"""The intransitive preference game at equal budget: Nash-MD, Nash Mirror Prox, DNO and INPO on the embedded model.

    python bench/learning/preference_game.py                   # the four arms at the default budget
    python bench/learning/preference_game.py iterations=2      # KEY=VALUE overrides reach every arm's campaign
    python bench/learning/preference_game.py --arms nash_md mirror_prox

The game: one round of rock-paper-scissors in the matrix world (`scenarios/campaigns/rps_nash_md.yaml`), the learner
(SmolLM2-135M-Instruct + LoRA, temperature 2) as player_0. Its policy is its distribution pi over the three replies;
the preference of one reply over another is the game's outcome, P(y > y') = 1 / 0.5 / 0 (win / tie / loss), the
cyclic matrix of the tabular game in `solvers.preference_games`. The regularised game with the reference mu (the
model without adapter) and tau = beta = 0.1 has the equilibrium pi*_tau, computed independently by
`solvers.preference_games.regularized_nash` from mu's measured action distribution; the unregularised game's Nash
equilibrium is uniform. Arms (everything else equal: iterations, rollouts, optimiser, seed, LoRA initialisation):

- nash_md: against the token-level geometric mixture pi^(7/8) mu^(1/8) of itself (the file as it is);
- mirror_prox: half / full prox steps against a frozen pi_k, then pi_{k+1/2} (eta 1, 4 passes per step; two
  iterations per Mirror Prox step, so the same rollouts as the others);
- dno: against a snapshot of itself (self_play), each group's best and worst trajectory by return as DPO's pair with
  the sampler as the moving reference (targets the unregularised game);
- inpo: against a snapshot of itself, judged adjacent pairs, tau = 0.1, eta = 1 (the same regularised game).

Measured per arm, from every checkpoint (one per iteration): the action distribution pi_t of the learner, from
`--samples` replies to the game's prompt (the same sampler seeds for every policy), smoothed by +1/2 per action;
KL(pi*_tau || pi_t), KL(uniform || pi_t) and the exploitability max_y P(y > pi_t) - 1/2 of the unregularised game.
Then a round robin of the final policies and the reference: policy A's reply k against policy B's reply k + N/2
(independent draws), the win rate with its Wilson 95% interval for every pair, and Bradley-Terry ratings with
bootstrap 95% intervals over those games. The held-out evaluation the campaign does (against `rock`) is in the
common table. Everything goes to MLflow (experiment `bench-learning`, run `preference-game`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from bench.learning.common import Arm, command_line, compare, win_interval  # noqa: E402

FILE = "scenarios/campaigns/rps_nash_md.yaml"
TAU = 0.1  # beta of nash_md / mirror_prox, tau of inpo
SAMPLES = 128
LEARNING = {"learning_rate": 5.0e-4, "micro_batch_size": 16, "judge": {"id": "outcome"}}
SNAPSHOT = {"self_play": {"seats": ["player_1"]}}
ARMS = {
    "nash_md": {},
    "mirror_prox": {"trainer": {"id": "mirror_prox", "beta": TAU, "eta": 1.0, "epochs": 4, **LEARNING}},
    "dno": {**SNAPSHOT, "trainer": {"id": "dno", "beta": 0.1, **LEARNING}},
    "inpo": {**SNAPSHOT, "trainer": {"id": "inpo", "eta": 1.0, "tau": TAU, **LEARNING}},
}


def arm(name: str, file: str = FILE, collect=None) -> Arm:
    """The arm `name` of ARMS: its own MLflow run name and every checkpoint kept (the distances read them all)."""
    return Arm(name, file, {**ARMS[name], "name": f"rps-{name.replace('_', '-')}", "checkpoint.keep": 1000}, collect)


def preference_matrix(n: int = 3) -> np.ndarray:
    """P[i, j] = P(action i beats action j) of rock-paper-scissors: 1 win, 0.5 tie, 0 loss."""
    return np.array([[0.5 if i == j else 1.0 if (i - j) % n == 1 else 0.0 for j in range(n)] for i in range(n)])


def replies(runner, samples: int, seed: int = 7) -> list[int]:
    """`samples` actions of the learner (its current weights) in one round against a uniform player: the same
    seeds every call, so two policies differ only by their weights."""
    from agents.scripted.matrix import MixedStrategy
    from agora.rollout import Rollout

    campaign = runner.campaign
    seats = {"player_0": runner.learner, "player_1": MixedStrategy(MixedStrategy.Config(), seed=seed)}
    rollout = Rollout(
        campaign.train.make_world, seats, {s: s for s in seats}, seed=seed, concurrency=samples, max_retries=0
    )
    return [s.action for e in rollout.run(samples) for s in e.steps if s.agent == "player_0"]


def distribution(actions: list[int], n: int = 3) -> np.ndarray:
    """Action frequencies smoothed by +1/2 each (Jeffreys): no zero for a KL or a log."""
    counts = np.bincount(np.asarray(actions, dtype=int), minlength=n).astype(float)
    return (counts + 0.5) / (counts.sum() + 0.5 * n)


def collect_for(samples: int):
    """The arm's `collect`: the reference's and every checkpoint's replies (the learner's weights after each
    iteration), read back from the checkpoint folders."""

    def collect(runner, result) -> dict:
        from agora.lora import load_adapter_file

        with runner.model.disable_adapter():
            reference = replies(runner, samples)
        folders = sorted(p for p in runner.run_folder.folder.glob("iter-*") if (p / "adapter").is_dir())
        per_iteration = []
        for folder in folders:
            load_adapter_file(runner.model, folder / "adapter")
            per_iteration.append(replies(runner, samples))
        return {"reference_actions": reference, "actions": per_iteration}

    return collect


def remeasure(folder: Path, names: list[str], overrides: list[str], samples: int) -> list[dict]:
    """Each arm's replies read again from an earlier run's checkpoints (`folder/<arm>/iter-*`, the folder `compare`
    printed), with the overrides that run had: no training."""
    from types import SimpleNamespace

    from agora.campaign import load_campaign
    from bench.learning.common import parse_overrides

    rows = []
    for name in names:
        a = arm(name)
        campaign = load_campaign(a.file, {**a.changes, **parse_overrides(overrides)})
        model, _, learner = campaign.load_learner()
        runner = SimpleNamespace(
            campaign=campaign, model=model, learner=learner, run_folder=SimpleNamespace(folder=folder / name)
        )
        rows.append({"arm": name, "extra": collect_for(samples)(runner, None)})
    return rows


def kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(p * (np.log(p) - np.log(q))))


def bootstrap_kl(target: np.ndarray, actions: list[int], draws: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of KL(target || distribution(actions)) over resamples of the replies."""
    rng = np.random.default_rng(seed)
    x = np.asarray(actions, dtype=int)
    values = [kl(target, distribution(list(rng.choice(x, size=len(x))))) for _ in range(draws)]
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def analyse(rows: list[dict]) -> tuple[list[str], dict]:
    """Distances to the equilibria over iterations, the round robin and its ratings."""
    from solvers.preference_games import regularized_nash
    from solvers.ratings import bradley_terry

    P = preference_matrix()
    reference = rows[0]["extra"]["reference_actions"]
    mu = distribution(reference)
    target = regularized_nash(P, mu, TAU)
    uniform = np.full(3, 1 / 3)
    lines = [
        f"reference mu (rock, paper, scissors) = {np.round(mu, 3).tolist()} from {len(reference)} replies",
        f"pi*_tau (tau {TAU}) = {np.round(target, 3).tolist()}; KL(pi*_tau || mu) = {kl(target, mu):.4f}",
        "",
        "| arm | KL(pi*_tau || pi_t), t = 0, 1, ... | final KL [95% bootstrap] | final pi | KL(uniform || final) | "
        "exploitability |",
        "|---|---|---|---|---|---|",
    ]
    out = {"mu": mu.tolist(), "target": target.tolist(), "arms": {}}
    finals = {"reference": reference}
    for r in rows:
        dists = [distribution(a) for a in r["extra"]["actions"]]
        curve = [kl(target, mu)] + [kl(target, d) for d in dists]
        final = dists[-1]
        exploit = float(np.max(P @ final) - 0.5)
        finals[r["arm"]] = r["extra"]["actions"][-1]
        lo, hi = bootstrap_kl(target, r["extra"]["actions"][-1])
        out["arms"][r["arm"]] = {
            "kl_curve": curve,
            "final_kl_interval": [lo, hi],
            "final": final.tolist(),
            "exploitability": exploit,
        }
        lines.append(
            f"| {r['arm']} | {', '.join(f'{x:.3f}' for x in curve)} | {curve[-1]:.3f} [{lo:.3f}, {hi:.3f}] | "
            f"{np.round(final, 3).tolist()} | "
            f"{kl(uniform, final):.3f} | {exploit:.3f} |"
        )
    names = list(finals)
    games, table = [], {}
    for a in names:
        for b in names:
            if a >= b:
                continue
            xs, ys = finals[a], finals[b]
            n = min(len(xs), len(ys))
            wins = [float(P[xs[k], ys[(k + n // 2) % n]]) for k in range(n)]
            games += [(a, b, w) for w in wins]
            table[f"{a} vs {b}"] = win_interval(wins)
    fit = bradley_terry(games, bootstrap=200, rng=np.random.default_rng(0)).as_dict()
    lines += ["", "| round robin (A vs B) | A's win rate (ties half) [95% CI] |", "|---|---|"]
    lines += [f"| {k} | {m:.3f} [{lo:.3f}, {hi:.3f}] |" for k, (m, lo, hi) in table.items()]
    lines += ["", "| policy | Bradley-Terry Elo [95% bootstrap] |", "|---|---|"]
    lines += [
        f"| {p} | {e:.0f} [{lo:.0f}, {hi:.0f}] |" for p, (e, lo, hi) in sorted(fit.items(), key=lambda x: -x[1][0])
    ]
    out["round_robin"] = {k: list(v) for k, v in table.items()}
    out["ratings"] = {k: list(v) for k, v in fit.items()}
    return lines, out


def main(argv: list[str] | None = None) -> dict:
    parser = command_line(__doc__, FILE, "arms")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS), help="the arms to run")
    parser.add_argument("--samples", type=int, default=SAMPLES, help="replies per policy and checkpoint")
    parser.add_argument(
        "--remeasure",
        type=Path,
        default=None,
        help="no training: measure the arms' checkpoints of an earlier run (its folder checkpoints/bench/preference-"
        "game-<time>; give the same overrides) and write analysis.json there",
    )
    args = parser.parse_args(argv)
    if args.remeasure is not None:
        lines, analysis = analyse(remeasure(args.remeasure, args.arms, args.overrides, args.samples))
        print("\n".join(lines))
        (args.remeasure / "analysis.json").write_text(json.dumps(analysis, indent=1))
        return {"analysis": analysis}
    arms = [arm(name, args.file, collect_for(args.samples)) for name in args.arms]
    result = compare(
        "preference-game",
        arms,
        overrides=args.overrides,
        uri=args.tracking_uri,
        baseline=args.arms[0],
        title="RPS preference game: Nash-MD, Mirror Prox, DNO, INPO",
    )
    lines, analysis = analyse(result["rows"])
    print("\n".join(lines))
    from agora.tracking import resolve_uri
    from mlflow import MlflowClient

    client = MlflowClient(resolve_uri(args.tracking_uri))
    client.log_dict(result["run_id"], analysis, "learning/preference-game_analysis.json")
    client.log_text(result["run_id"], "\n".join(lines), "learning/preference-game_analysis.md")
    for arm, values in analysis["arms"].items():
        for step, value in enumerate(values["kl_curve"]):
            client.log_metric(result["run_id"], f"{arm}/kl_to_equilibrium", value, step=step)
    return {**result, "analysis": analysis}


if __name__ == "__main__":
    main()
