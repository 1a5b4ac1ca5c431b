"""The check every world's reply grammar passes (used by the worlds' grammar tests).

A grammar and its parser cannot drift apart unnoticed: on states from real episodes,
- every reply sampled from the grammar parses (grammar within the parser's language), to a legal action;
- every legal action the world renders (`render_action` of fallback draws) is in the grammar;
- llguidance takes the Lark form and accepts the sampled replies token by token, and llama.cpp's
  GBNF form is valid (read back by llguidance's GBNF reader).
"""

from __future__ import annotations

import numpy as np

from agora.grammar import Grammar


def embedded_tokenizer():
    from transformers import AutoTokenizer

    from agora.models import prepare_embedded

    return AutoTokenizer.from_pretrained(prepare_embedded())


def accepts_tokens(grammar: Grammar, reply: str, tokenizer, max_tokens: int | None = None) -> bool:
    """Whether llguidance, decoding under `grammar.lark(max_tokens)`, accepts `reply`'s tokens and then the end."""
    from agora.constrain import matcher

    m = matcher(tokenizer, len(tokenizer), grammar.lark(max_tokens))
    ids = tokenizer(reply, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return m.consume_tokens(ids) and m.is_accepting()


def check_world_grammar(
    world, agent: str, observation, rng: np.random.Generator, *, samples: int = 100, tokenizer=None
):
    """Assert the drift properties above for `agent` at the world's current state; returns the grammar."""
    import llguidance
    from llguidance.gbnf_to_lark import gbnf_to_lark

    grammar = world.reply_grammar(agent, observation)
    assert isinstance(grammar, Grammar), f"{type(world).__name__}.reply_grammar must return a Grammar"
    for _ in range(samples):
        reply = grammar.sample(rng)
        assert grammar.matches(reply), reply
        world.parse(agent, reply)  # a ParseError here is a grammar reply the parser refuses
    for _ in range(10):
        action = world.fallback_action(agent, rng)
        rendered = world.render_action(agent, action)
        assert grammar.matches(rendered), f"legal action {action!r} renders as {rendered!r}, outside the grammar"
    assert llguidance.LLMatcher.validate_grammar(llguidance.LLMatcher.grammar_from_lark(grammar.lark())) == ""
    gbnf = llguidance.LLMatcher.grammar_from_lark(gbnf_to_lark(grammar.gbnf()))
    assert llguidance.LLMatcher.validate_grammar(gbnf) == ""
    if tokenizer is not None:
        for _ in range(3):
            reply = grammar.sample(rng, short=True)
            assert accepts_tokens(grammar, reply, tokenizer), reply
    return grammar
