"""A plan-execute LLM agent: one model is both the planner that sets a subgoal and the executor that pursues it
(HiPER, "Hierarchical Plan-Execute Reinforcement learning for LLM agents", arXiv 2602.16165).

Each turn the model writes

    <switch>KEEP|SWITCH</switch><subgoal>SUBGOAL</subgoal><action>REPLY</action>

where REPLY is the world's reply (decoded under the world's reply grammar, so it parses), SUBGOAL one line of free
text of at most `subgoal_tokens` tokens. A segment starts at the seat's first turn and at each SWITCH; while the agent
KEEPs, the grammar writes its subgoal out verbatim. The world parses REPLY; the rest of the decision travels in
`ActResponse.info` (`Step.info`): whether it opened a segment, the subgoal, the whole reply and the token spans of its
three parts, which the HiPER trainer (`trainers.hiper`) credits at three levels.

Unconstrained (`constrained: false`) the reply is read leniently in time linear in its length: a missing or garbled
part counts as a new segment (`format_ok: false`), and a KEEP whose subgoal changed opens a segment too
(`keep_changed: true`, which the trainer may penalise).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from pydantic import Field

from agents.llm import LLMConfig, LLMPolicy
from agora.grammar import Grammar, alt, literal, seq, text
from agora.policy import ActRequest, ActResponse
from agora.world import sanitize

SWITCH, KEEP = "SWITCH", "KEEP"
FORMAT = "<switch>KEEP or SWITCH</switch><subgoal>your plan for the next turns</subgoal><action>your reply</action>"
INSTRUCTIONS = (
    "\n\nPlan, then act. Reply in exactly this form:\n"
    + FORMAT
    + "\nwhere your reply inside <action> is written in the format asked above."
)
FIRST = "\nYou have no subgoal yet: write SWITCH and set one."
CURRENT = '\nYour current subgoal (set {ago}): "{subgoal}". KEEP it (write it again) or SWITCH to a new one.'


class PlanExecuteConfig(LLMConfig):
    subgoal_tokens: int = Field(16, ge=1, le=512, description="longest subgoal, in tokens (decoding bounds it)")
    subgoal_chars: int = Field(160, ge=1, le=4000, description="longest subgoal, in characters")
    example_subgoal: str = Field(
        "find out what the others want, then get the most I can from it",
        min_length=1,
        max_length=400,
        description="the subgoal of the worked example shown before the first turn (with `demonstrations`)",
    )


def plan_grammar(world: Grammar | None, subgoal: str | None, config: PlanExecuteConfig) -> Grammar:
    """The language of a plan-execute reply: SWITCH with a new subgoal (no '<' or '>', so its closing tag is
    unambiguous), or KEEP with `subgoal` verbatim (when there is one), then the world's reply in <action> tags
    (one line of free text without '<' where the world declares no grammar)."""
    new = seq(
        "<switch>SWITCH</switch><subgoal>",
        text(config.subgoal_chars, config.subgoal_tokens, exclude="<>"),
        "</subgoal>",
    )
    head = alt(seq("<switch>KEEP</switch><subgoal>", literal(subgoal), "</subgoal>"), new) if subgoal else new
    action = world.root if world is not None else text(4000, config.max_new_tokens, exclude="<")
    return Grammar(seq(head, "<action>", action, "</action>"))


def between(reply: str, start: str, end: str, at: int = 0, last: bool = False) -> tuple[str | None, int]:
    """The text between the first `start` at or after `at` and the next (or, `last`, the final) `end`, and the index
    after that `end`; (None, at) when a tag is missing. str.find/rfind: linear in the reply."""
    i = reply.find(start, at)
    if i < 0:
        return None, at
    j = reply.rfind(end, i + len(start)) if last else reply.find(end, i + len(start))
    if j < 0:
        return None, at
    return reply[i + len(start) : j], j + len(end)


def read_reply(reply: str) -> dict[str, Any]:
    """{switch, subgoal, action, format_ok} of a reply; the action is the whole reply when its tags are missing, so
    that a world may still parse a reply written without the plan."""
    switch, at = between(reply, "<switch>", "</switch>")
    subgoal, at = between(reply, "<subgoal>", "</subgoal>", at)
    action, _ = between(reply, "<action>", "</action>", at, last=True)
    if action is None:  # an unclosed action tag: the rest of the reply
        i = reply.find("<action>", at)
        action = reply[i + len("<action>") :] if i >= 0 else None
    switch = switch.strip().upper() if switch is not None else None
    ok = switch in (KEEP, SWITCH) and subgoal is not None and action is not None
    return {
        "switch": switch if switch in (KEEP, SWITCH) else None,
        "subgoal": sanitize(subgoal, 400) if subgoal is not None else "",
        "action": (action if action is not None else reply).strip(),
        "format_ok": ok,
    }


def token_spans(tokenizer: Any, ids: list[int]) -> list[int]:
    """[end of the switch part, end of the subgoal part] in tokens of the completion `ids`: the fewest tokens whose
    text holds '</switch>' (resp. '</subgoal>'); len(ids) where a tag never appears. Each token is decoded once
    (the tags are ASCII, so they read the same token by token as in the whole text)."""
    pieces = tokenizer.batch_decode([[t] for t in ids], skip_special_tokens=True)
    ends, whole = np.cumsum([len(piece) for piece in pieces]), "".join(pieces)
    spans = []
    for tag in ("</switch>", "</subgoal>"):
        at = whole.find(tag)
        spans.append(int(np.searchsorted(ends, at + len(tag))) + 1 if at >= 0 else len(ids))
    return spans


class PlanExecutePolicy(LLMPolicy):
    """An `llm` policy that plans: switch, subgoal and action in every reply (HiPER's plan-execute format)."""

    Config = PlanExecuteConfig

    def __init__(self, config: PlanExecuteConfig, **kwargs):
        super().__init__(config, **kwargs)
        example = sanitize(config.example_subgoal, config.subgoal_chars).replace("<", "(").replace(">", ")")
        self.example_plan = f"<switch>SWITCH</switch><subgoal>{example}</subgoal>"  # the worked example's plan
        # (episode, seat) -> {decision: (subgoal after it, decision its segment started at)}
        self.plans: dict[tuple[int, str], dict[int, tuple[str, int]]] = {}

    def current(self, request: ActRequest) -> tuple[str, int] | None:
        """The subgoal in force before `request`'s decision and the decision its segment started at; None on a
        seat's first decision (its old plans are forgotten: a new episode under that index) or when the subgoal in
        force is empty."""
        key = (request.episode, request.agent)
        if request.decision == 0:
            self.plans.pop(key, None)
            return None
        plans = self.plans.get(key, {})
        if request.decision - 1 in plans:  # a seat's decisions come one after the other
            found = plans[request.decision - 1]
        else:
            earlier = [d for d in plans if d < request.decision]
            found = plans[max(earlier)] if earlier else None
        return found if found and found[0] else None  # an empty subgoal cannot be kept: a new segment

    def planned(self, request: ActRequest, plan: tuple[str, int] | None) -> ActRequest:
        """`request` with the plan instructions added to the world's prompt and its worked example, and the reply
        grammar wrapped in the plan-execute format."""
        note = FIRST if plan is None else CURRENT.format(subgoal=plan[0], ago=ago(request.decision - plan[1]))
        messages = [dict(m) for m in request.messages]
        if messages:
            messages[0]["content"] += INSTRUCTIONS + note
        demonstration = []
        for message in request.demonstration:
            if message["role"] == "user":
                demonstration.append({**message, "content": message["content"] + INSTRUCTIONS + FIRST})
            elif message["role"] == "assistant":
                content = f"{self.example_plan}<action>{message['content']}</action>"
                demonstration.append({**message, "content": content})
            else:
                demonstration.append(message)
        grammar = plan_grammar(request.grammar, plan[0] if plan else None, self.config)
        return dataclasses.replace(request, messages=messages, demonstration=demonstration, grammar=grammar)

    def act(self, requests: list[ActRequest]) -> list[ActResponse]:
        plans = [self.current(r) for r in requests]
        responses = LLMPolicy.act(self, [self.planned(r, p) for r, p in zip(requests, plans)])
        for request, plan, response in zip(requests, plans, responses):
            read = read_reply(response.text)
            changed = plan is not None and read["format_ok"] and read["switch"] == KEEP and read["subgoal"] != plan[0]
            start = plan is None or read["switch"] != KEEP or changed or not read["format_ok"]
            subgoal = read["subgoal"] if start else plan[0]
            began = request.decision if start else plan[1]
            self.plans.setdefault((request.episode, request.agent), {})[request.decision] = (subgoal, began)
            response.info = {
                "switch": read["switch"],
                "segment_start": start,
                "subgoal": subgoal,
                "format_ok": read["format_ok"],
                "keep_changed": changed,
                "reply": response.text,
                "spans": token_spans(self.tokenizer, response.completion_ids or []),
            }
            response.text = read["action"]
        return responses


def ago(turns: int) -> str:
    return "on your last turn" if turns == 1 else f"{turns} turns ago"
