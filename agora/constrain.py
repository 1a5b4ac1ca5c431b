"""Decoding under a reply grammar with llguidance: token masks while sampling, and again for scoring.

llguidance ("Low-level Guidance", github.com/guidance-ai/llguidance) computes, from a Lark grammar
and the tokens so far, which tokens may come next, lazily over the tokenizer's trie: no per-grammar
compilation, so grammars built per turn (live players, items in the pool) cost ~4 ms each, and a
mask for 16 rows costs ~0.3 ms on our CPU when free text is bounded in tokens. (xgrammar compiled
each such grammar in 2.3 s; outlines-core had not built the index of a grammar with bounded free
text after 10 minutes; bench/grammar_libraries.py measures all three.)

- `Constraints`: the per-row grammar state of one `engine.sample` call (`allowed` -> boolean mask
  of the next token per row, `advance` with the sampled tokens);
- `replay_bitmask` / `allowed_tokens`: the same masks recomputed from recorded token ids, so the
  trainers score a completion under exactly the distribution it was sampled from
  (`scoring.sequence_logprobs(..., allowed=)`);
- `masked`: logits with disallowed tokens at `MASKED`, the one way both sides apply a mask.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import torch

MASKED = -1e30  # a disallowed token's logit: exp underflows to exactly 0, and 0 x logp stays finite (entropy)

_tokenizers: dict[tuple, object] = {}
_lock = threading.Lock()


def ll_tokenizer(tokenizer, vocab_size: int):
    """llguidance's view of a Hugging Face tokenizer (built once per vocabulary: ~2 s for 49k tokens)."""
    key = (tokenizer.name_or_path, len(tokenizer), vocab_size, tokenizer.eos_token_id)
    with _lock:
        if key not in _tokenizers:
            import llguidance.hf

            _tokenizers[key] = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)
        return _tokenizers[key]


_matchers: OrderedDict[tuple, object] = OrderedDict()
MATCHERS_KEPT = 256  # built grammars kept for copying (a turn's grammar usually recurs: same phase, same pool)


def matcher(tokenizer, vocab_size: int, lark: str):
    """A fresh llguidance matcher of the Lark grammar `lark`; a grammar llguidance rejects is a ValueError.

    Building one parses and prepares the grammar (12 ms for a negotiation reply, 190 ms for the
    ~27k-character grammar of three probabilities summing to one); a copy of a built one costs
    ~0.02 ms, so built matchers are kept (LRU) and each caller gets its own copy."""
    import llguidance

    ll = ll_tokenizer(tokenizer, vocab_size)
    key = (id(ll), lark)
    with _lock:
        built = _matchers.get(key)
        if built is not None:
            _matchers.move_to_end(key)
            return built.deep_copy()
    grammar = llguidance.LLMatcher.grammar_from_lark(lark)
    error = llguidance.LLMatcher.validate_grammar(grammar, ll)
    if error:
        raise ValueError(f"invalid reply grammar: {error}")
    built = llguidance.LLMatcher(ll, grammar, log_level=0)
    with _lock:
        _matchers[key] = built
        while len(_matchers) > MATCHERS_KEPT:
            _matchers.popitem(last=False)
    return built.deep_copy()


def unpack(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """llguidance's int32 bitmask [B, ceil(V/32)] (bit j of word i: token 32 i + j) -> bool [B, V]."""
    shifts = torch.arange(32, dtype=torch.int32)
    bits = (bitmask[:, :, None] >> shifts) & 1
    return bits.reshape(bitmask.shape[0], -1)[:, :vocab_size].bool()


def masked(scaled: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """`scaled` logits with every token `allowed` does not allow set to MASKED (None: unchanged)."""
    return scaled if allowed is None else scaled.masked_fill(~allowed.to(scaled.device), MASKED)


class Constraints:
    """The grammar state of each row of one sampling call (rows without a grammar decode freely)."""

    def __init__(self, tokenizer, vocab_size: int, grammars: Sequence[str | None]):
        self.vocab_size = vocab_size
        self.matchers = [matcher(tokenizer, vocab_size, g) if g else None for g in grammars]
        words = (vocab_size + 31) // 32
        self.bitmask = torch.full((len(grammars), words), -1, dtype=torch.int32)

    @property
    def active(self) -> bool:
        return any(m is not None for m in self.matchers)

    def allowed(self, rows: Sequence[int], stop: torch.Tensor) -> torch.Tensor | None:
        """bool [len(rows), V]: the tokens each of `rows` (original row indices) may take next; None when
        none of them is constrained. A row its grammar leaves no token (a matcher in error: not
        expected) may only stop (`stop`: the stop token ids)."""
        live = [(k, self.matchers[row]) for k, row in enumerate(rows) if self.matchers[row] is not None]
        if not live:
            return None
        bitmask = self.bitmask[: len(rows)]
        bitmask.fill_(-1)
        for k, m in live:
            view = bitmask[k]
            m.unsafe_compute_mask_ptr(view.data_ptr(), view.numel() * 4)
        allowed = unpack(bitmask, self.vocab_size)
        stuck = ~allowed.any(-1)
        if bool(stuck.any()):
            allowed[stuck.nonzero().squeeze(-1)[:, None], stop.cpu()[None, :]] = True
        return allowed

    def advance(self, rows: Sequence[int], tokens: Sequence[int]) -> None:
        for row, token in zip(rows, tokens):
            m = self.matchers[row]
            if m is not None and not m.is_stopped():
                m.consume_token(int(token))


def replay_bitmask(tokenizer, vocab_size: int, lark: str, tokens: Sequence[int]) -> torch.Tensor:
    """int32 [len(tokens), ceil(V/32)]: llguidance's mask before each of `tokens`, recomputed by feeding the
    recorded tokens to a fresh matcher of `lark` (what the sampler's `Constraints` computed for them)."""
    m = matcher(tokenizer, vocab_size, lark)
    bitmask = torch.full((len(tokens), (vocab_size + 31) // 32), -1, dtype=torch.int32)
    for step, token in enumerate(tokens):  # exactly as `Constraints.allowed`, then `advance`
        view = bitmask[step]
        m.unsafe_compute_mask_ptr(view.data_ptr(), view.numel() * 4)
        if not m.is_stopped():
            m.consume_token(int(token))
    return bitmask


def allowed_tokens(bitmasks: Sequence[torch.Tensor | None], width: int, vocab_size: int) -> torch.Tensor | None:
    """bool [B, width, V] from per-row `replay_bitmask`s, right-aligned in `width` columns as
    `scoring.completion_logits` lays out completions; a row without one (None) allows every token.
    None when no row has one."""
    if all(b is None for b in bitmasks):
        return None
    out = torch.ones((len(bitmasks), width, vocab_size), dtype=torch.bool)
    for row, bitmask in enumerate(bitmasks):
        if bitmask is not None and len(bitmask):
            out[row, width - len(bitmask) :] = unpack(bitmask, vocab_size)
    return out


class ReplayedMasks:
    """What a trainer scores completions under: each recorded completion's grammar masks
    (`replay_bitmask`), replayed once per (grammar, tokens) and reused by every epoch and by the
    reference model's pass, laid out per micro-batch by `allowed`."""

    def __init__(self, tokenizer, vocab_size: int):
        self.tokenizer, self.vocab_size = tokenizer, vocab_size
        self.bitmasks: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}

    def bitmask(self, lark: str | None, tokens: Sequence[int]) -> torch.Tensor | None:
        if not lark:
            return None
        if self.tokenizer is None:
            raise ValueError(
                "completions decoded under a grammar are rescored under it: the trainer needs the tokenizer"
            )
        key = (lark, tuple(tokens))
        if key not in self.bitmasks:
            self.bitmasks[key] = replay_bitmask(self.tokenizer, self.vocab_size, lark, tokens)
        return self.bitmasks[key]

    def allowed(self, grammars: Sequence[str | None], completions: Sequence[Sequence[int]]) -> torch.Tensor | None:
        """`allowed_tokens` of one batch (None when no completion was constrained)."""
        if not any(grammars):
            return None
        width = max(len(c) for c in completions)
        return allowed_tokens([self.bitmask(g, c) for g, c in zip(grammars, completions)], width, self.vocab_size)


def vocab_size(model) -> int:
    """Rows of the model's output layer: the width of its logits (peft models forward the call)."""
    return model.get_output_embeddings().weight.shape[0]
