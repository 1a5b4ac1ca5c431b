"""Multi-issue bargaining in the Deal-or-No-Deal style, as a PettingZoo AECEnv.

After "Deal or No Deal? End-to-End Learning for Negotiation Dialogues" (arXiv 1706.05125). Two
agents (`agent_names`, default alice and bob) split a pool of items drawn at reset (default: book,
hat and ball, 1-4 of each and 5-7 in all). Each has private integer values per item type, with the
whole pool worth `total_value` (10) to each of them. The opener is drawn from the seed
(`first_mover`). They alternate turns; a turn is a free-text message plus an action:

- PROPOSE take: the mover would keep `take`, the other would get `counts - take`;
- ACCEPT: accept the other agent's standing offer: the deal is made and the episode ends;
- WALK AWAY: the episode ends with no deal.

Without an accepted offer within `max_turns` turns (both agents' together, default 10), there is
no deal. With a deal each agent scores the value of its share, Σ_i values_i · share_i; without one,
both get `disagreement_value` (0). An illegal action (ACCEPT with no offer standing, a take out of
range) also ends the episode with no deal, flagged `info["illegal_action"]` (the PettingZoo
classic convention); the text interface never produces one.

Reply format (case and markdown emphasis tolerated; ACCEPT is offered only when an offer stands):

    MESSAGE: I need the books more than you do.
    ACTION: PROPOSE book=2 hat=0 ball=1         (or ACTION: ACCEPT, ACTION: WALK AWAY)

The reply grammar (`reply_grammar`, for constrained decoding) is exactly that form, per turn: an
optional MESSAGE line of free text (one line, at most `max_message_chars`), then the ACTION line
with every item once, in order, each count from 0 to the pool's, ACCEPT only while the other agent's
offer stands.

Metrics per episode: `agreement` (a deal was made), `score/<agent>`, `joint_welfare`,
`pareto_optimal` (the deal is Pareto-optimal over all splits; no deal counts 0), `nash_product`
((u_a − d)(u_b − d) with d the disagreement value), `turns`, `walk_away`, `illegal`. Scripted
players (greedy, fair, random) are in agents/scripted/negotiation.py.
"""

from worlds.negotiation.rules import (
    ACCEPT,
    ACCEPT_WORDS,
    ACTION_LABEL,
    ACTION_LINE,
    MAX_VALUE_VECTORS,
    MESSAGE_LABEL,
    MESSAGE_LINE,
    MESSAGE_TOKENS,
    POOL_DRAWS,
    PROPOSE,
    PROPOSE_WORD,
    TAKE_PAIR,
    WALK_AWAY,
    WALK_AWAY_WORDS,
    NegotiationConfig,
    action_body,
    admits_valid_values,
    all_splits,
    count_value_vectors,
    draw_pool,
    is_pareto_optimal,
    message_body,
    split_value,
    take_grammar,
    take_text,
    valid_values,
    value_vectors,
)
from worlds.negotiation.world import env, raw_env

__all__ = [
    "ACCEPT",
    "ACCEPT_WORDS",
    "ACTION_LABEL",
    "ACTION_LINE",
    "MAX_VALUE_VECTORS",
    "MESSAGE_LABEL",
    "MESSAGE_LINE",
    "MESSAGE_TOKENS",
    "NegotiationConfig",
    "POOL_DRAWS",
    "PROPOSE",
    "PROPOSE_WORD",
    "TAKE_PAIR",
    "WALK_AWAY",
    "WALK_AWAY_WORDS",
    "action_body",
    "admits_valid_values",
    "all_splits",
    "count_value_vectors",
    "draw_pool",
    "is_pareto_optimal",
    "message_body",
    "split_value",
    "take_grammar",
    "take_text",
    "valid_values",
    "value_vectors",
    "env",
    "raw_env",
]
