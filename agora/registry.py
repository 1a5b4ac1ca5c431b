"""Names users write in scenario and campaign files -> the classes that implement them.

Four registries, one per extension point: worlds, agents, trainers and campaign kinds. Agora's own
units are the entries below; an installed package adds its own through Python entry points in the
groups `agora.worlds`, `agora.agents`, `agora.trainers` and `agora.campaigns` (name = the id users
write, value = "module:Class"), as pytest and MLflow plug-ins do. Only registered names can be
built from a file: nothing is imported from a user-given string. Classes load lazily, so listing
Agora's own entries does not import torch.

Each registered class carries its `Config` (a pydantic model of its parameters) and a docstring
whose first line is its summary; an agent that plays one world only names it in `world`.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from agora.errors import AgoraError, ScenarioError

ORIGIN = "agora"  # the origin of Agora's own entries (a plug-in's is its distribution)


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "package.module:attribute"
    doc: str | None = None  # one line; plug-ins: None, read from the class's docstring
    world: str | None = None  # set for agents that only play one world (scripted baselines)
    origin: str = ORIGIN  # "agora" or the plug-in's "distribution version"
    contract: str | None = None  # plug-ins: the registry's kind, whose contract the loaded class is checked against

    def load(self) -> Any:
        if self.origin == ORIGIN:
            return load_target(self.target)
        try:
            loaded = load_target(self.target)
        except Exception as exc:
            raise AgoraError(
                f"the plug-in '{self.name}' from {self.origin} ({self.target}) cannot be loaded: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        if problem := breach(self.contract, loaded):
            raise AgoraError(f"the plug-in '{self.name}' from {self.origin} ({self.target}) {problem}")
        return loaded

    @property
    def summary(self) -> str:
        if self.doc is not None:
            return self.doc
        doc = (self.load().__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    @property
    def config(self) -> type[BaseModel]:
        """The pydantic model of this entry's parameters: the class's `Config` (worlds, agents, trainers, campaign
        kinds)."""
        return self.load().Config


CONTRACTS = {  # registry kind -> the classes a plug-in's class must subclass (any one of them)
    "world": ("pettingzoo:AECEnv", "pettingzoo:ParallelEnv"),
    "agent": ("agora.policy:Policy",),
    "trainer": ("agora.trainer:Trainer",),
    "campaign kind": ("agora.campaign:CampaignKind",),
}


def load_target(target: str) -> Any:
    """The attribute a "package.module:attribute" string names."""
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def breach(contract: str | None, loaded: Any) -> str | None:
    """Why a plug-in's class does not implement the contract of its registry (`contract`: world, agent, trainer,
    campaign kind), or None. The conformance test checks the rest."""
    bases = tuple(load_target(b) for b in CONTRACTS.get(contract or "", ()))
    if not isinstance(loaded, type) or (bases and not issubclass(loaded, bases)):
        return f"is not a {' or '.join(b.__name__ for b in bases)} subclass, as a {contract} must be"
    config = getattr(loaded, "Config", None)
    if not (isinstance(config, type) and issubclass(config, BaseModel)):
        return "has no pydantic `Config` class attribute (its parameters)"
    return None


def plugin_entries(group: str, contract: str) -> list[Entry]:
    """The entries installed packages add through the entry point group `group`, checked against `contract` when
    loaded."""
    out = []
    for point in sorted(importlib.metadata.entry_points(group=group), key=lambda p: p.name):
        dist = getattr(point, "dist", None)
        entry = Entry(
            point.name,
            point.value,
            origin=f"{dist.name} {dist.version}" if dist is not None else "a plug-in",
            contract=contract,
        )
        if contract == "agent":
            try:
                entry = Entry(
                    entry.name, entry.target, world=entry.load().world, origin=entry.origin, contract=contract
                )
            except AgoraError:
                pass  # listed; using it explains the failure
        out.append(entry)
    return out


class Registry:
    def __init__(self, kind: str, entries: list[Entry], *, group: str, listing: str | None = None):
        self.kind = kind
        self.group = group  # the entry point group plug-ins register in
        self._own = entries
        self._plugins: list[Entry] | None = None
        self.listing = listing or f"agora {kind}s"  # the command that lists the entries

    def entries(self, world: str | None = None) -> list[Entry]:
        """Entries usable with `world` (all when `world` is None): Agora's own, then plug-ins'."""
        if self._plugins is None:
            self._plugins = plugin_entries(self.group, self.kind)
        return [e for e in self._own + self._plugins if world is None or e.world in (None, world)]

    def get(self, name: str, *, world: str | None = None, path: str | None = None) -> Entry:
        usable = self.entries(world)
        found = [e for e in usable if e.name == name]
        if len(found) > 1:
            raise ScenarioError(
                f"{len(found)} registered {self.kind}s are named '{name}' (from {', '.join(e.origin for e in found)})",
                path=path,
                hint="uninstall one of the plug-ins, or ask its authors to rename it",
            )
        if found:
            return found[0]
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
        Entry(
            "negotiation", "worlds.negotiation:raw_env", "Multi-issue bargaining over an item pool (Deal or No Deal)."
        ),
        Entry(
            "economy",
            "worlds.economy:parallel_env",
            "LLM Economist: a tax planner over N workers choosing labor (Parallel).",
        ),
        Entry(
            "werewolf",
            "worlds.werewolf:raw_env",
            "Social deduction: hidden roles, night actions, free-text discussion, plurality votes.",
        ),
        Entry(
            "matrix",
            "worlds.matrix:parallel_env",
            "Repeated normal-form games (RPS, matching pennies, prisoner's dilemma, custom).",
        ),
        Entry(
            "online_learning",
            "worlds.online_learning:raw_env",
            "Online learning with full information: play a distribution, see the loss vector; external regret "
            "(arXiv 2403.16843).",
        ),
        Entry(
            "deferral",
            "worlds.deferral:raw_env",
            "A team answers problems over rounds; each agent may EVAL a peer, CREATE or DEFER to an expert (HILA).",
        ),
    ],
    group="agora.worlds",
)

AGENTS = Registry(
    "agent",
    [
        Entry("llm", "agents.llm:LLMPolicy", "A Hugging Face causal LM (embedded default SmolLM2-135M-Instruct)."),
        Entry(
            "plan_execute",
            "agents.plan_execute:PlanExecutePolicy",
            "An llm that plans (HiPER): a KEEP/SWITCH decision and a subgoal before each action, in one reply.",
        ),
        Entry(
            "server",
            "agents.server:ServerPolicy",
            "A model behind an OpenAI-compatible server (vLLM, SGLang, llama.cpp, hosted APIs); not trainable.",
        ),
        Entry(
            "human", "agents.human:HumanPolicy", "A person at the terminal: sees the world's prompt, types the reply."
        ),
        Entry(
            "greedy",
            "agents.scripted.negotiation:GreedyNegotiator",
            "Demands its best items; accepts only high offers.",
            world="negotiation",
        ),
        Entry(
            "fair",
            "agents.scripted.negotiation:FairNegotiator",
            "Proposes and accepts about half of its own value.",
            world="negotiation",
        ),
        Entry(
            "random",
            "agents.scripted.negotiation:RandomNegotiator",
            "Random legal actions (a sanity baseline).",
            world="negotiation",
        ),
        Entry(
            "rule_based",
            "agents.scripted.werewolf:RuleBasedPlayer",
            "Seer claims its finds, village follows the seer, wolves fake-claim and vote together.",
            world="werewolf",
        ),
        Entry(
            "random",
            "agents.scripted.werewolf:RandomPlayer",
            "Uniformly random legal targets (a sanity baseline).",
            world="werewolf",
        ),
        Entry(
            "latent",
            "agents.latent:LatentPolicy",
            "LSPO: day statements from latent strategies drawn from a solved latent game; night actions and votes "
            "by rule.",
            world="werewolf",
        ),
        Entry(
            "mixed",
            "agents.scripted.matrix:MixedStrategy",
            "A fixed mixed strategy (uniform by default).",
            world="matrix",
        ),
        Entry(
            "tit_for_tat",
            "agents.scripted.matrix:TitForTat",
            "Opens with one action, then copies the opponent.",
            world="matrix",
        ),
        Entry(
            "tabular",
            "agents.scripted.matrix:TabularSoftmax",
            "A learnable stationary strategy softmax(θ) (trained by PSRO's train oracle).",
            world="matrix",
        ),
        Entry(
            "hedge",
            "agents.scripted.matrix:Hedge",
            "Hedge (multiplicative weights) on the known payoff table: a no-regret learner.",
            world="matrix",
        ),
        Entry(
            "hedge",
            "agents.scripted.online_learning:Hedge",
            "Hedge (multiplicative weights) on the revealed losses: a no-regret learner.",
            world="online_learning",
        ),
        Entry(
            "ftl",
            "agents.scripted.online_learning:FollowTheLeader",
            "Follow-the-leader: all mass on the least total loss so far.",
            world="online_learning",
        ),
        Entry(
            "uniform",
            "agents.scripted.online_learning:Uniform",
            "The uniform distribution every round.",
            world="online_learning",
        ),
        Entry(
            "best_response",
            "agents.scripted.economy:BestResponseWorker",
            "Worker: the exact utility-maximising hours under the schedule.",
            world="economy",
        ),
        Entry(
            "saez",
            "agents.scripted.economy:SaezPlanner",
            "Planner: Saez optimal rates for the population (40 h reference).",
            world="economy",
        ),
        Entry(
            "us_federal",
            "agents.scripted.economy:FederalPlanner",
            "Planner: the 2024 US federal marginal rates.",
            world="economy",
        ),
        Entry("flat", "agents.scripted.economy:FlatPlanner", "Planner: one rate for every bracket.", world="economy"),
        Entry(
            "hill_climbing",
            "agents.scripted.economy:HillClimbingPlanner",
            "Planner: coordinate hill climbing on the period SWF with +-10-point moves.",
            world="economy",
        ),
        Entry(
            "never_defer",
            "agents.scripted.deferral:NeverDefer",
            "Team baseline: follows the majority, never defers.",
            world="deferral",
        ),
        Entry(
            "always_defer",
            "agents.scripted.deferral:AlwaysDefer",
            "Team baseline: defers every round.",
            world="deferral",
        ),
        Entry(
            "defer_when_disagree",
            "agents.scripted.deferral:DeferWhenDisagree",
            "Team baseline: defers unless the team agrees.",
            world="deferral",
        ),
        Entry(
            "oracle",
            "agents.scripted.deferral:Oracle",
            "Team upper bound: adopts a right answer, else defers (needs oracle_observations).",
            world="deferral",
        ),
        Entry(
            "simulated",
            "agents.scripted.deferral:SimulatedExpert",
            "Expert: right with a per-difficulty accuracy, may explain.",
            world="deferral",
        ),
    ],
    group="agora.agents",
)

TRAINERS = Registry(
    "trainer",
    [
        Entry(
            "grpo",
            "trainers.grpo:GRPOTrainer",
            "Clipped policy gradient with group-relative advantages (GRPO; GiGPO with estimator: gigpo), LoRA.",
        ),
        Entry(
            "hiper",
            "trainers.hiper:HiPERTrainer",
            "HiPER: a plan-execute learner (learner.policy: plan_execute) trained with hierarchical advantages "
            "(segment, turn and switch levels) from three value heads, LoRA.",
        ),
        Entry(
            "preference",
            "trainers.preference:PreferenceTrainer",
            "DPO / IPO / KTO on pairs or labels built from each group's best and worst trajectories, LoRA.",
        ),
        Entry(
            "inpo",
            "trainers.inpo:INPOTrainer",
            "INPO self-play preference optimisation: square loss on judge-labelled on-policy pairs per group, LoRA.",
        ),
        Entry(
            "dno",
            "trainers.dno:DNOTrainer",
            "DNO (Direct Nash Optimization): DPO on each group's large-margin best/worst pair, judged, with the "
            "sampler pi_t as the moving reference, LoRA.",
        ),
        Entry(
            "nash_md",
            "trainers.nash:NashMDTrainer",
            "Nash-MD (arXiv 2312.00886): the learner against the token-level geometric mixture of itself and its "
            "reference in every other seat; REINFORCE with the 0.5 baseline on the judged preference, KL term, LoRA.",
        ),
        Entry(
            "mirror_prox",
            "trainers.nash:MirrorProxTrainer",
            "Nash Mirror Prox (arXiv 2505.19731): alternating half and full prox steps (policy-gradient passes) "
            "against a frozen copy of pi_k, then of pi_k+1/2, in every other seat, LoRA.",
        ),
        Entry(
            "regret_loss",
            "trainers.regret_loss:RegretLossTrainer",
            "Regret-loss (arXiv 2403.16843) on online_learning: soft-max-weighted squared regret of the exact "
            "expected play over the reply grid, LoRA.",
        ),
    ],
    group="agora.trainers",
)

CAMPAIGNS = Registry(
    "campaign kind",
    [
        Entry(
            "train",
            "campaigns.train:TrainCampaign",
            "An LLM with LoRA trained by a trainer (GRPO, DPO/KTO, INPO, DNO, Nash-MD, Mirror Prox) against fixed "
            "opponents, a league of its snapshots, or an opponent the trainer makes from it.",
        ),
        Entry(
            "psro",
            "campaigns.psro:PSROCampaign",
            "PSRO on the matrix world: payoffs by rollouts, a meta-solver, best responses (exact or trained "
            "tabular) added per iteration.",
        ),
        Entry(
            "lspo",
            "campaigns.lspo:LSPOCampaign",
            "LSPO on werewolf: LLM candidates -> k-means latent strategies -> CFR on the latent game -> DPO.",
        ),
        Entry(
            "stackelberg",
            "campaigns.stackelberg:StackelbergCampaign",
            "The economy's tax planner (LoRA LLM) trained by GRPO on the social welfare of its schedules, workers "
            "best-responding; evaluated against Saez, federal, flat and the Stackelberg optimum.",
        ),
        Entry(
            "hila",
            "campaigns.hila:HILACampaign",
            "HILA's dual loop on the deferral world: GRPO on the team's EVAL/CREATE/DEFER decisions (groups of "
            "replayed candidates), SFT on the expert's answers to deferred problems.",
        ),
    ],
    group="agora.campaigns",
    listing="agora trainers",
)
