"""Constrained decoding: replies in the world's grammar, log-probs exact under the same masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agora.constrain import allowed_tokens, replay_bitmask, vocab_size
from agora.engine import sample, stop_token_ids
from agora.grammar import Grammar, alt, integer, one_of, seq, text
from agora.policy import ActRequest
from agora.scoring import sequence_logprobs

OFFER = Grammar(
    seq(
        "MESSAGE: ",
        text(200, 40),
        "\nACTION: ",
        alt(seq("PROPOSE book=", integer(0, 3), " hat=", integer(0, 2)), "ACCEPT"),
    )
)
VOTE = Grammar(seq("VOTE: ", one_of(["alice", "bob", "carol"])))


def load(path):
    from agora.models import load_causal_lm

    return load_causal_lm(str(path), device="cpu")


def prompts_of(tokenizer, n: int) -> list[list[int]]:
    texts = [f"<|im_start|>user\nMake an offer number {i}.<|im_end|>\n<|im_start|>assistant\n" for i in range(n)]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def draw(model, tokenizer, prompts, grammars, *, temperature=1.0, max_new_tokens=48, seed=0):
    return sample(
        model,
        prompts,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=1.0,
        stop_ids=stop_token_ids(model, tokenizer),
        pad_id=tokenizer.pad_token_id,
        generators=[torch.Generator().manual_seed(seed + i) for i in range(len(prompts))],
        grammars=grammars,
        tokenizer=tokenizer,
    )


def rescored(model, tokenizer, prompts, outs, grammars, temperature=1.0, masks=True):
    completions = [ids for ids, _ in outs]
    vocab = vocab_size(model)
    bitmasks = [replay_bitmask(tokenizer, vocab, g, c) if g and masks else None for g, c in zip(grammars, completions)]
    allowed = allowed_tokens(bitmasks, max(map(len, completions)), vocab)
    logp, _, mask, _ = sequence_logprobs(
        model, prompts, completions, temperature=temperature, pad_id=tokenizer.pad_token_id, allowed=allowed
    )
    return logp, mask


def test_a_random_model_decoded_under_grammars_replies_in_them(tiny_model_dir):
    """A random 2-layer model writes garbage; under each row's grammar every reply is in it, and a row
    without one decodes freely in the same batch."""
    model, tokenizer = load(tiny_model_dir)
    grammars = [OFFER.lark(48), VOTE.lark(48), None, OFFER.lark(48)]
    outs = draw(model, tokenizer, prompts_of(tokenizer, 4), grammars)
    replies = [tokenizer.decode(ids, skip_special_tokens=True) for ids, _ in outs]
    assert OFFER.matches(replies[0]) and OFFER.matches(replies[3]), replies
    assert VOTE.matches(replies[1]), replies[1]
    assert not OFFER.matches(replies[2]) and not VOTE.matches(replies[2])  # free: garbage
    for ids, _ in outs[:2]:
        assert ids[-1] in stop_token_ids(model, tokenizer)  # the grammar completed, then the reply ended


def test_free_text_is_cut_to_fit_the_token_budget(tiny_model_dir):
    """With 200 characters of free text allowed but 24 tokens to reply in, the grammar's text is bounded
    so that the reply still completes (not truncated mid-format)."""
    model, tokenizer = load(tiny_model_dir)
    outs = draw(model, tokenizer, prompts_of(tokenizer, 3), [OFFER.lark(24)] * 3, max_new_tokens=24)
    for ids, _ in outs:
        reply = tokenizer.decode(ids, skip_special_tokens=True)
        assert OFFER.matches(reply), reply
        assert len(ids) <= 24


@pytest.mark.parametrize("which", ["tiny", "embedded"])
def test_logprobs_are_exact_under_the_replayed_masks(which, tiny_model_dir, embedded_model_dir):
    """pi_old recorded by the constrained sampler equals the trainer's recomputation under masks
    replayed from the token ids (ratio 1 before any update); without the masks it does not."""
    model, tokenizer = load(tiny_model_dir if which == "tiny" else embedded_model_dir)
    grammars = [OFFER.lark(40), VOTE.lark(40), OFFER.lark(40)]
    prompts = prompts_of(tokenizer, 3)
    outs = draw(model, tokenizer, prompts, grammars, temperature=0.8, max_new_tokens=40)
    logp, mask = rescored(model, tokenizer, prompts, outs, grammars, temperature=0.8)
    width = logp.shape[1]
    for row, (ids, recorded) in enumerate(outs):
        mine = logp[row, width - len(ids) :]
        assert torch.allclose(mine, torch.tensor(recorded), atol=2e-4), (mine, recorded)
    free, _ = rescored(model, tokenizer, prompts, outs, grammars, temperature=0.8, masks=False)
    assert not torch.allclose(free[mask], logp[mask], atol=1e-2)  # the masks change the distribution


def test_llm_policy_decodes_under_the_request_grammar(tiny_model_dir):
    from agents.llm import LLMConfig, LLMPolicy

    def requests(grammar):
        return [
            ActRequest(0, "alice", None, [{"role": "user", "content": f"Vote now ({i})."}], grammar=grammar, seed=i)
            for i in range(3)
        ]

    policy = LLMPolicy(LLMConfig(model=tiny_model_dir, max_new_tokens=32), seed=0)
    for response in policy.act(requests(VOTE)):
        assert VOTE.matches(response.text), response.text
        assert response.grammar == VOTE.lark(32)  # recorded: the trainers rescore under it
    free = LLMPolicy(LLMConfig(model=tiny_model_dir, max_new_tokens=32, constrained=False), seed=0)
    responses = free.act(requests(VOTE))
    assert all(r.grammar is None for r in responses)
    assert not all(VOTE.matches(r.text) for r in responses)


def test_grammar_forms_agree_on_samples():
    """The regex form accepts what the sampler draws, and rejects a neighbour outside the language."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert OFFER.matches(OFFER.sample(rng))
    assert not OFFER.matches("MESSAGE: hi\nACTION: PROPOSE book=4 hat=0")
    assert not VOTE.matches("VOTE: dave")


def test_a_fitted_grammar_fits_every_reply_in_the_token_budget():
    """fitted(n) cuts free text so that the longest reply, one token per character at worst plus the end,
    fits in n tokens; in characters for servers (GBNF, regex) and in tokens for the local sampler (Lark)."""
    rng = np.random.default_rng(1)
    fixed = len("MESSAGE: ") + len("\nACTION: ") + len("PROPOSE book=0 hat=0")  # the longest action
    fitted = OFFER.fitted(60)
    cap = 60 - 1 - fixed
    assert f"{{1,{cap}}}" in fitted.gbnf() and f"max_tokens={cap}]" in fitted.lark()
    assert max(len(fitted.sample(rng)) for _ in range(300)) <= 59
    assert max(len(OFFER.sample(rng)) for _ in range(300)) > 59  # unfitted: up to 200 characters of text
    assert OFFER.fitted(400) == OFFER.fitted(400).fitted(400) and "max_tokens=40]" in OFFER.fitted(400).lark()
    assert OFFER.lark(60) == fitted.lark()
