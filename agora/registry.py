"""Names users write in scenario files -> the classes that implement them.

Only the entries below can be built from a file; nothing is imported from a user-given string.
A new world, agent or trainer is one file plus one line here. Classes load lazily, so listing
the registry does not import torch.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from agora.errors import ScenarioError


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "package.module:attribute" inside this project
    summary: str
    world: str | None = None  # set for agents that only play one world (scripted baselines)

    def load(self) -> Any:
        module, attr = self.target.split(":")
        return getattr(importlib.import_module(module), attr)

    @property
    def params(self) -> type[BaseModel]:
        """The pydantic model of this entry's parameters (worlds: `Config`, agents: `Params`)."""
        cls = self.load()
        return getattr(cls, "Config", None) or cls.Params


class Registry:
    def __init__(self, kind: str, entries: list[Entry], listing: str | None = None):
        self.kind = kind
        self._entries = entries
        self.listing = listing or f"agora {kind}s"  # the command that lists the entries

    def entries(self, world: str | None = None) -> list[Entry]:
        """Entries usable with `world` (all when `world` is None)."""
        return [e for e in self._entries if world is None or e.world in (None, world)]

    def get(self, name: str, *, world: str | None = None, path: str | None = None) -> Entry:
        usable = self.entries(world)
        for entry in usable:
            if entry.name == name:
                return entry
        names = [e.name for e in usable]
        close = difflib.get_close_matches(name, names, n=1)
        where = f" for world '{world}'" if world else ""
        hint = f"did you mean '{close[0]}'?" if close else f"run `{self.listing}` to list them"
        raise ScenarioError(
            f"unknown {self.kind} '{name}'{where}; registered: {', '.join(names) or 'none'}", path=path, hint=hint
        )


WORLDS = Registry(
    "world",
    [
        Entry("negotiation", "worlds.negotiation:raw_env", "Multi-issue bargaining over an item pool (Deal or No Deal)."),
        Entry("economy", "worlds.economy:parallel_env", "LLM Economist: a tax planner over N workers choosing labor (Parallel)."),
        Entry("werewolf", "worlds.werewolf:raw_env", "Social deduction: hidden roles, night actions, free-text discussion, plurality votes."),
        Entry("matrix", "worlds.matrix:parallel_env", "Repeated normal-form games (RPS, matching pennies, prisoner's dilemma, custom)."),
        Entry("online_learning", "worlds.online_learning:raw_env", "Online learning with full information: play a distribution, see the loss vector; external regret (arXiv 2403.16843)."),
        Entry("deferral", "worlds.deferral:raw_env", "A team answers problems over rounds; each agent may EVAL a peer, CREATE or DEFER to an expert (HILA)."),
    ],
)

AGENTS = Registry(
    "agent",
    [
        Entry("llm", "agents.llm:LLMPolicy", "A Hugging Face causal LM (embedded default SmolLM2-135M-Instruct)."),
        Entry("human", "agents.human:HumanPolicy", "A person at the terminal: sees the world's prompt, types the reply."),
        Entry("greedy", "agents.scripted.negotiation:GreedyNegotiator", "Demands its best items; accepts only high offers.", world="negotiation"),
        Entry("fair", "agents.scripted.negotiation:FairNegotiator", "Proposes and accepts about half of its own value.", world="negotiation"),
        Entry("random", "agents.scripted.negotiation:RandomNegotiator", "Random legal actions (a sanity baseline).", world="negotiation"),
        Entry("rule_based", "agents.scripted.werewolf:RuleBasedPlayer", "Seer claims its finds, village follows the seer, wolves fake-claim and vote together.", world="werewolf"),
        Entry("random", "agents.scripted.werewolf:RandomPlayer", "Uniformly random legal targets (a sanity baseline).", world="werewolf"),
        Entry("latent", "agents.latent:LatentPolicy", "LSPO: day statements from latent strategies drawn from a solved latent game; night actions and votes by rule.", world="werewolf"),
        Entry("mixed", "agents.scripted.matrix:MixedStrategy", "A fixed mixed strategy (uniform by default).", world="matrix"),
        Entry("tit_for_tat", "agents.scripted.matrix:TitForTat", "Opens with one action, then copies the opponent.", world="matrix"),
        Entry("tabular", "agents.scripted.matrix:TabularSoftmax", "A learnable stationary strategy softmax(θ) (trained by PSRO's train oracle).", world="matrix"),
        Entry("hedge", "agents.scripted.matrix:Hedge", "Hedge (multiplicative weights) on the known payoff table: a no-regret learner.", world="matrix"),
        Entry("hedge", "agents.scripted.online_learning:Hedge", "Hedge (multiplicative weights) on the revealed losses: a no-regret learner.", world="online_learning"),
        Entry("ftl", "agents.scripted.online_learning:FollowTheLeader", "Follow-the-leader: all mass on the least total loss so far.", world="online_learning"),
        Entry("uniform", "agents.scripted.online_learning:Uniform", "The uniform distribution every round.", world="online_learning"),
        Entry("best_response", "agents.scripted.economy:BestResponseWorker", "Worker: the exact utility-maximising hours under the schedule.", world="economy"),
        Entry("saez", "agents.scripted.economy:SaezPlanner", "Planner: Saez optimal rates for the population (40 h reference).", world="economy"),
        Entry("us_federal", "agents.scripted.economy:FederalPlanner", "Planner: the 2024 US federal marginal rates.", world="economy"),
        Entry("flat", "agents.scripted.economy:FlatPlanner", "Planner: one rate for every bracket.", world="economy"),
        Entry("hill_climbing", "agents.scripted.economy:HillClimbingPlanner", "Planner: coordinate hill climbing on the period SWF with +-10-point moves.", world="economy"),
        Entry("never_defer", "agents.scripted.deferral:NeverDefer", "Team baseline: follows the majority, never defers.", world="deferral"),
        Entry("always_defer", "agents.scripted.deferral:AlwaysDefer", "Team baseline: defers every round.", world="deferral"),
        Entry("defer_when_disagree", "agents.scripted.deferral:DeferWhenDisagree", "Team baseline: defers unless the team agrees.", world="deferral"),
        Entry("oracle", "agents.scripted.deferral:Oracle", "Team upper bound: adopts a right answer, else defers (needs oracle_observations).", world="deferral"),
        Entry("simulated", "agents.scripted.deferral:SimulatedExpert", "Expert: right with a per-difficulty accuracy, may explain.", world="deferral"),
    ],
)

TRAINERS = Registry(
    "trainer",
    [
        Entry("grpo", "trainers.grpo:GRPOTrainer", "Clipped policy gradient with group-relative advantages (GRPO; GiGPO with estimator: gigpo), LoRA."),
        Entry("preference", "trainers.preference:PreferenceTrainer", "DPO / IPO / KTO on pairs or labels built from each group's best and worst trajectories, LoRA."),
        Entry("inpo", "trainers.preference_games:INPOTrainer", "INPO self-play preference optimisation: square loss on judge-labelled on-policy pairs of each group, LoRA."),
    ],
)

CAMPAIGNS = Registry(
    "campaign kind",
    [
        Entry("train", "agora.campaign:TRAINING", "An LLM with LoRA trained by a trainer (GRPO, DPO/KTO) against fixed opponents or its own snapshots."),
        Entry("psro", "trainers.psro_campaign:PSRO", "PSRO on the matrix world: payoffs by rollouts, a meta-solver, best responses (exact or trained tabular) added per iteration."),
        Entry("lspo", "trainers.lspo:LSPO", "LSPO on werewolf: LLM candidates -> k-means latent strategies -> CFR on the latent game -> DPO."),
    ],
    listing="agora trainers",
)
