"""HILA's outer loop: the expert's answers to the problems where the team deferred, as supervised pairs
("Adaptive Collaboration with Humans: Metacognitive Policy Optimization for Multi-Agent LLMs with Continual
Learning", arXiv 2603.07972).

Each played problem on which the expert answered gives one pair per learner seat: the seat's round-0 prompt
(the problem, before any teammate spoke), exactly as its tokens were sampled from, and the expert's answer
in the world's canonical round-0 reply (`ANSWER: 417`, then the stop token). Fine-tuning on them
(`trainers.sft`) improves the team's own answering, which changes when deferring pays. A simulated expert's
wrong answers are learned too, as a person's would be: the loop learns from the expert it has.
"""

from __future__ import annotations

from agora.trajectory import Episode
from campaigns.hila_groups import played_expert
from trainers.sft import SFTPair
from worlds.deferral.rules import CREATE, EXPERT
from worlds.deferral.world import DeferralConfig, raw_env


def sft_pairs(episodes: list[Episode], config: DeferralConfig, seats: list[str], tokenizer) -> list[SFTPair]:
    """(round-0 prompt of each seat in `seats`, the expert's answer) for every episode the expert answered in."""
    world, pairs = raw_env(config), []
    for episode in episodes:
        reply = played_expert(episode)
        answer = reply.get("answer", "") if isinstance(reply, dict) else ""
        if not answer:
            continue
        world.reset(seed=episode.seed)  # round 0: the reply is rendered as an answer
        seen: set[str] = set()
        for step in episode.steps:
            if step.agent == EXPERT or step.agent not in seats or step.agent in seen or step.prompt_ids is None:
                continue
            seen.add(step.agent)  # its first step: round 0
            text = world.render_action(step.agent, {"type": CREATE, "target": 0, "answer": answer})
            ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
            pairs.append(SFTPair(list(step.prompt_ids), ids))
    return pairs
