"""Which constrained-decoding library: llguidance vs xgrammar vs outlines-core on Agora's reply grammars.

Agora's grammars change every turn (live players, items in the pool, bracket count), so what
matters is the cost of a NEW grammar (compile + matcher) and of each step's token mask over a
batch, on a CPU, with the embedded model's 49k-token vocabulary. One run measures every library
installed, on the same grammar (a werewolf-style day reply: a bounded free-text statement, then a
vote among the live players) written in each library's own form from one `agora.grammar.Grammar`:
llguidance gets `lark()` (free text bounded in tokens), xgrammar `gbnf()` and outlines-core
`regex()` (free text bounded in characters, as those forms bound it). Masks are filled for
`--rows` rows per step while each row follows a random walk of allowed tokens (seeded).

    .venv/bin/python bench/grammar_libraries.py [--rows 16] [--steps 60] [--text-chars 200]
    # xgrammar and outlines-core are not Agora dependencies: pip install xgrammar outlines-core to compare
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agora.constrain import unpack  # noqa: E402
from agora.grammar import Grammar, one_of, seq, text  # noqa: E402

PLAYERS = ["alice", "bob", "carol", "dave", "erin", "frank"]


def grammar(live: int, chars: int) -> Grammar:
    return Grammar(seq("STATEMENT: ", text(chars, chars // 4), "\nVOTE: ", one_of(PLAYERS[:live])))


def llguidance_side(tokenizer, vocab):
    import llguidance
    import llguidance.hf

    ll = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab)

    def new(g: Grammar):
        compiled = llguidance.LLMatcher.grammar_from_lark(g.lark())
        return lambda: llguidance.LLMatcher(ll, compiled)

    def fill(m, bitmask, row):
        view = bitmask[row]
        m.unsafe_compute_mask_ptr(view.data_ptr(), view.numel() * 4)

    return new, fill, lambda m, t: m.consume_token(t), lambda m: m.is_stopped()


def xgrammar_side(tokenizer, vocab):
    import xgrammar

    compiler = xgrammar.GrammarCompiler(
        xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab), cache_enabled=False
    )

    def new(g: Grammar):
        compiled = compiler.compile_grammar(g.gbnf())
        return lambda: xgrammar.GrammarMatcher(compiled)

    return (
        new,
        lambda m, b, r: m.fill_next_token_bitmask(b, r),
        lambda m, t: m.accept_token(t),
        lambda m: m.is_terminated(),
    )


def byte_vocabulary(tokenizer):
    """tokenizer's byte-level BPE tokens as bytes (GPT-2's byte <-> unicode table), for outlines-core."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table, extra = dict(zip(map(chr, printable), printable)), 0
    for b in range(256):
        if b not in printable:
            table[chr(256 + extra)], extra = b, extra + 1
    out: dict[bytes, list[int]] = {}
    for token, index in tokenizer.get_vocab().items():
        if index != tokenizer.eos_token_id and token not in tokenizer.all_special_tokens:
            if all(c in table for c in token):
                out.setdefault(bytes(table[c] for c in token), []).append(index)
    return out


def outlines_side(tokenizer, vocab):
    from outlines_core import Guide, Index, Vocabulary

    vocabulary = Vocabulary(tokenizer.eos_token_id, byte_vocabulary(tokenizer))

    def fill(guide, bitmask, row):
        view = bitmask[row]
        guide.write_mask_into(view.data_ptr(), view.numel(), 4)

    def new(g: Grammar):
        index = Index(g.regex(), vocabulary)
        return lambda: Guide(index)

    return (
        new,
        fill,
        lambda m, t: m.advance(t),
        lambda m: m.is_finished(),
    )


SIDES = {"llguidance": llguidance_side, "xgrammar": xgrammar_side, "outlines-core": outlines_side}


def measure(name, make_side, tokenizer, vocab, args) -> str:
    start = time.perf_counter()
    try:
        new, fill, consume, done = make_side(tokenizer, vocab)
    except ImportError:
        return f"{name:14} not installed"
    setup = time.perf_counter() - start
    rng = np.random.default_rng(0)
    compile_s = []
    for live in (3, 4, 5):  # a new grammar each turn (compiled once, a matcher per row): nothing reused
        start = time.perf_counter()
        matcher = new(grammar(live, args.text_chars))
        matchers = [matcher() for _ in range(args.rows)]
        compile_s.append(time.perf_counter() - start)
    bitmask = torch.full((args.rows, (vocab + 31) // 32), -1, dtype=torch.int32)
    step_s = []
    for _ in range(args.steps):
        start = time.perf_counter()
        for row, m in enumerate(matchers):
            if not done(m):
                fill(m, bitmask, row)
        step_s.append(time.perf_counter() - start)
        allowed = unpack(bitmask, vocab)
        for row, m in enumerate(matchers):
            options = allowed[row].nonzero().squeeze(-1)
            if not done(m) and options.numel():
                consume(m, int(options[rng.integers(options.numel())]))
    return (
        f"{name:14} tokenizer {setup * 1e3:7.0f} ms   new grammar + {args.rows} matchers "
        f"{np.mean(compile_s) * 1e3:9.1f} ms   "
        f"mask of {args.rows} rows {np.median(step_s) * 1e3:7.2f} ms median, {np.mean(step_s) * 1e3:7.2f} ms mean"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--text-chars", type=int, default=200)
    parser.add_argument("--only", choices=list(SIDES), action="append", help="measure only these (repeatable)")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from agora.models import prepare_embedded

    tokenizer = AutoTokenizer.from_pretrained(prepare_embedded())
    vocab = len(tokenizer)
    print(
        f"embedded tokenizer ({vocab} tokens), {args.rows} rows, {args.steps} steps, free text {args.text_chars} chars"
    )
    for name in args.only or SIDES:
        print(measure(name, SIDES[name], tokenizer, vocab, args), flush=True)


if __name__ == "__main__":
    main()
