"""The LLM policy: batched sampling, logprobs, determinism; model resolution and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from agents.llm import LLMPolicy
from agora.cli import app
from agora.engine import PrefixCache, kv, nucleus, sample
from agora.errors import ModelNotFoundError
from agora.models import load_causal_lm, resolve_model_path
from agora.policy import ActRequest

PROMPTS = ["What is 2+2?", "Name a color.", "Say hello in French, please, to my friend Bob.", "Count to 3."]


def requests(prompts=PROMPTS):
    return [ActRequest(i, "a", None, [{"role": "user", "content": p}]) for i, p in enumerate(prompts)]


def recomputed_logprobs(model, prompt_ids, completion_ids, temperature=1.0):
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1 : -1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion_ids)[:, None]).squeeze(-1)


def sample_counting_prefills(model, prompts, **kwargs):
    """`sample`'s outputs, and the (rows, width) of each prefill pass it made."""
    passes = []
    forward = model.forward
    model.forward = lambda *a, **k: (passes.append(tuple(k["input_ids"].shape)), forward(*a, **k))[1]
    try:
        out = sample(model, prompts, **kwargs)
    finally:
        model.forward = forward
    return out, [shape for shape in passes if shape[1] > 1]


def assert_like_a_cold_computation(model, prompts, warm, kwargs):
    """Cached-prefix outputs equal those of a call without a cache, logprobs those of a full forward."""
    assert [t for t, _ in warm] == [t for t, _ in sample(model, prompts, **kwargs)]
    for prompt, (tokens, logprobs) in zip(prompts, warm):
        assert torch.allclose(recomputed_logprobs(model, prompt, tokens), torch.tensor(logprobs), atol=1e-4)


def test_sampler_stops_and_records_one_logprob_per_token(tiny_model_dir):
    policy = LLMPolicy(LLMPolicy.Config(model=tiny_model_dir, temperature=1.0, max_new_tokens=12), seed=0)
    out = policy.act(requests())
    for response in out:
        assert 1 <= len(response.completion_ids) <= 12
        assert len(response.logprobs) == len(response.completion_ids)
        assert all(lp <= 0 for lp in response.logprobs)
        stops = [i for i, t in enumerate(response.completion_ids) if t in policy.stop_ids]
        assert stops in ([], [len(response.completion_ids) - 1])  # nothing is generated after a stop token
    assert policy.stats.generated_tokens == sum(len(r.completion_ids) for r in out)


def test_sampling_is_seeded_and_logprobs_match_a_fresh_forward(tiny_model_dir):
    params = LLMPolicy.Config(model=tiny_model_dir, temperature=0.8, max_new_tokens=10)
    a = [r.completion_ids for r in LLMPolicy(params, seed=7).act(requests())]
    b = [r.completion_ids for r in LLMPolicy(params, seed=7).act(requests())]
    c = [r.completion_ids for r in LLMPolicy(params, seed=8).act(requests())]
    assert a == b and a != c
    policy = LLMPolicy(params, seed=7)
    for r in policy.act(requests()):
        ref = recomputed_logprobs(policy.model, r.prompt_ids, r.completion_ids, temperature=0.8)
        assert torch.allclose(ref, torch.tensor(r.logprobs), atol=1e-4)


def test_batched_greedy_equals_one_prompt_at_a_time(tiny_model_dir):
    policy = LLMPolicy(
        LLMPolicy.Config(model=tiny_model_dir, temperature=0, max_new_tokens=8, max_batch_size=3), seed=0
    )
    batched = [r.completion_ids for r in policy.act(requests())]
    single = [policy.act([r])[0].completion_ids for r in requests()]
    assert batched == single


SYSTEM = (
    "You are a careful negotiator. Always answer in the exact format MESSAGE: ... then ACTION: ... on its own line."
)


def test_prefix_cache_reuses_kv_across_calls_without_changing_outputs(tiny_model_dir):
    def make(mb):
        return LLMPolicy(
            LLMPolicy.Config(
                model=tiny_model_dir, temperature=0, max_new_tokens=6, system_prompt=SYSTEM, prefix_cache_mb=mb
            ),
            seed=0,
        )

    cached, plain = make(64), make(0)
    assert plain.prefix_cache is None
    for prompts in (PROMPTS, ["Propose a split.", "Accept?"], PROMPTS[:1]):
        a, b = cached.act(requests(prompts)), plain.act(requests(prompts))
        assert [r.completion_ids for r in a] == [r.completion_ids for r in b]
        for r in a:
            assert torch.allclose(
                recomputed_logprobs(cached.model, r.prompt_ids, r.completion_ids), torch.tensor(r.logprobs), atol=1e-4
            )
    system_tokens = len(cached.tokenizer(SYSTEM)["input_ids"])
    assert cached.prefix_cache.hits >= 2 and cached.prefix_cache.reused_tokens >= 2 * system_tokens


def test_each_row_resumes_from_its_own_earlier_prompt(tiny_model_dir):
    """The next turn of each episode extends that episode's previous prompt: every row reuses its own
    cached prompt (different per row), and outputs and logprobs are those of a cold computation."""
    from transformers import AutoTokenizer

    model, _ = load_causal_lm(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    first = [tokenizer(SYSTEM + " " + p)["input_ids"] for p in PROMPTS]
    second = [
        ids + tokenizer(f" Then turn {i} said: I want {i + 1} books.")["input_ids"] for i, ids in enumerate(first)
    ]
    kwargs = dict(max_new_tokens=6, temperature=0, top_p=1.0, stop_ids=set(), pad_id=0)
    cache = PrefixCache()
    sample(model, first, prefix_cache=cache, **kwargs)
    hits, reused = cache.hits, cache.reused_tokens
    shared = min(len(a) for a in first)  # an upper bound of the common prefix
    warm = sample(model, second, prefix_cache=cache, **kwargs)
    assert cache.hits - hits >= len(second)  # every row found its own prompt
    assert cache.reused_tokens - reused >= sum(len(ids) for ids in first) - len(first) * shared
    assert [t for t, _ in warm] == [t for t, _ in sample(model, second, **kwargs)]
    for prompt, (tokens, logprobs) in zip(second, warm):
        assert torch.allclose(
            recomputed_logprobs(model, prompt, tokens, temperature=1.0), torch.tensor(logprobs), atol=1e-4
        )


def test_prefix_cache_is_dropped_when_the_weights_change(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()  # private copy: the weights are edited below
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [tokenizer(SYSTEM + " " + p)["input_ids"] for p in PROMPTS]
    kwargs = dict(max_new_tokens=5, temperature=0, top_p=1.0, stop_ids=set(), pad_id=0)
    cache = PrefixCache()
    sample(model, prompts, prefix_cache=cache, **kwargs)
    assert cache.entries
    with torch.no_grad():
        model.lm_head.weight.mul_(-1.0)  # an optimizer step would change them in place like this
        model.model.embed_tokens.weight.add_(0.5)
    assert sample(model, prompts, prefix_cache=cache, **kwargs) == sample(model, prompts, **kwargs)
    assert cache.hits == 0


def test_versions_swapped_through_one_model_keep_their_own_caches(tiny_model_dir):
    """League versions act through one shared model whose weights are swapped before each one's turns: with
    `weights_key` naming the loaded version, each version's prefix cache survives the others' turns, and its
    outputs stay those of a cold computation under its own weights."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    states = {"a": {k: v.clone() for k, v in model.state_dict().items()}}
    states["b"] = {k: v + 0.05 if k.endswith("q_proj.weight") else v for k, v in states["a"].items()}
    loaded = []

    def swap_in(name):
        model.load_state_dict(states[name])  # in place, like load_adapter_state
        loaded[:] = [name]

    params = LLMPolicy.Config(model=tiny_model_dir, temperature=0, max_new_tokens=4)
    keyed = {
        n: LLMPolicy(params, seed=0, model=model, tokenizer=tokenizer, weights_key=lambda: tuple(loaded)) for n in "ab"
    }
    plain = {n: LLMPolicy(params, seed=0, model=model, tokenizer=tokenizer) for n in "ab"}
    first, later = (
        requests(PROMPTS[:2]),
        [ActRequest(i, "a", None, [{"role": "user", "content": p + " And then?"}]) for i, p in enumerate(PROMPTS[:2])],
    )
    for policies in (keyed, plain):
        for batch in (first, later):
            for name in "ab":
                swap_in(name)
                out = policies[name].act(batch)
                cold = LLMPolicy(
                    params.model_copy(update={"prefix_cache_mb": 0}), seed=0, model=model, tokenizer=tokenizer
                ).act(batch)
                assert [r.completion_ids for r in out] == [r.completion_ids for r in cold]
    assert all(keyed[n].prefix_cache.hits > 0 for n in "ab")  # the second prompts resumed from each version's first
    assert all(plain[n].prefix_cache.hits == 0 for n in "ab")  # without the key every swap empties the cache


def test_rows_that_stop_early_leave_the_batch_without_changing_the_others(tiny_model_dir):
    model, tokenizer = load_causal_lm(tiny_model_dir)
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    kwargs = dict(max_new_tokens=8, temperature=0, top_p=1.0, pad_id=tokenizer.pad_token_id)
    free = [ids for ids, _ in sample(model, prompts, stop_ids=set(), **kwargs)]
    stop = {free[1][-1]}  # the random model's rows differ in whether and when they reach this token
    batched = sample(model, prompts, stop_ids=stop, **kwargs)
    single = [sample(model, [p], stop_ids=stop, **kwargs)[0] for p in prompts]
    assert len({len(ids) for ids, _ in batched}) > 1  # some rows left the batch before the others
    assert [ids for ids, _ in batched] == [ids for ids, _ in single]
    for (_, a), (_, b) in zip(batched, single):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-4)


def test_nucleus_keeps_the_top_mass():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    assert torch.allclose(nucleus(probs, 0.7), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    assert torch.allclose(nucleus(probs, 0.01), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))


def test_unknown_models_say_how_to_get_them(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        resolve_model_path("no-such-model")
    with pytest.raises(ModelNotFoundError, match="local Hugging Face cache"):
        load_causal_lm("nobody/no-such-model-xyz")
    with pytest.raises(ModelNotFoundError, match="without config.json"):
        resolve_model_path(str(tmp_path))


def test_cli_reports_a_missing_model_and_writes_nothing(tmp_path, tracking_uri):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        "name: t\nworld: {id: matrix}\nagents:\n  '*': {policy: llm, model: nobody/no-such-model-xyz}\nepisodes: 1\n"
    )
    result = CliRunner().invoke(app, ["run", str(scenario)])
    assert result.exit_code == 2 and "hf download nobody/no-such-model-xyz" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "mlruns").exists()


@pytest.mark.model
def test_embedded_model_batched_greedy_and_logprobs():
    policy = LLMPolicy(LLMPolicy.Config(temperature=0, max_new_tokens=16), seed=0)
    batched = policy.act(requests())
    assert [r.completion_ids for r in batched] == [policy.act([q])[0].completion_ids for q in requests()]
    assert "4" in batched[0].text or "four" in batched[0].text.lower()
    for r in batched:
        ref = recomputed_logprobs(policy.model, r.prompt_ids, r.completion_ids)
        assert torch.allclose(ref, torch.tensor(r.logprobs), atol=1e-3)


def test_demonstration_is_shown_only_when_enabled(tiny_model_dir):
    demo = [{"role": "user", "content": "DEMO-PROMPT"}, {"role": "assistant", "content": "DEMO-REPLY"}]
    messages = [{"role": "user", "content": "REAL"}]
    on = LLMPolicy(LLMPolicy.Config(model=tiny_model_dir), seed=0).render(messages, demo)
    off = LLMPolicy(LLMPolicy.Config(model=tiny_model_dir, demonstrations=False), seed=0).render(messages, demo)
    assert on.index("DEMO-PROMPT") < on.index("DEMO-REPLY") < on.index("REAL")
    assert "DEMO" not in off and off.endswith("<|im_start|>assistant\n")


def test_common_prefix_leaves_every_prompt_a_token():
    from agora.engine import common_prefix_length

    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert common_prefix_length([[7], [7, 8]]) == 0


def test_prefix_cache_is_bounded_in_bytes_and_evicts_least_recently_used():
    def layer(n):
        return [(torch.zeros(1, 2, n, 4), torch.zeros(1, 2, n, 4))]  # 2 * 2*4 floats = 64 bytes per token

    cache, model = PrefixCache(max_bytes=64 * 60), torch.nn.Linear(1, 1)
    cache._check(model)
    a, b, c = list(range(20)), list(range(100, 130)), list(range(200, 220))
    cache.store(a, layer(20))
    cache.store(b, layer(30))
    assert cache.bytes == 64 * 50
    assert cache.longest_match(model, a + [7])[0] == 20  # a is now the most recently used
    cache.store(c, layer(20))  # 70 tokens > 60: the least recently used (b) goes
    assert set(cache.entries) == {tuple(a), tuple(c)} and cache.bytes == 64 * 40
    cache.store(a + list(range(5)), layer(25))  # an extension replaces its prefix
    assert tuple(a) not in cache.entries and cache.bytes == 64 * 45
    cache.store(list(range(300, 400)), layer(100))  # larger than the whole budget: not stored
    assert cache.bytes == 64 * 45 and not cache.fits(100, layer(1)) and not cache.fits(8, layer(1))


def test_growing_cache_matches_transformers_dynamic_cache(tiny_model_dir):
    """In-place appends give the logits of transformers' concatenating cache, through row selection and growth."""
    from transformers import DynamicCache

    from agora.engine import GrowingLayer, growing_cache

    model, _ = load_causal_lm(tiny_model_dir)
    ids = torch.randint(3, model.config.vocab_size, (3, 9), generator=torch.Generator().manual_seed(0))
    logits = []
    for cache in (DynamicCache(), growing_cache(model)):
        with torch.no_grad():
            out = [model(input_ids=ids, **kv(model, cache)).logits[:, -1]]
            token = out[-1].argmax(-1)
            for step in range(150):  # past the first buffer's spare room (128)
                if step == 5:
                    cache.batch_select_indices(torch.tensor([0, 2]))
                    token = token[[0, 2]]
                    if isinstance(cache.layers[0], GrowingLayer):  # one copy, into a buffer kept for the appends
                        buffer = cache.layers[0]._buffer[0]
                        assert buffer.shape[0] == 2 and cache.layers[0].keys.data_ptr() == buffer.data_ptr()
                if step == 6 and isinstance(cache.layers[0], GrowingLayer):
                    assert cache.layers[0]._buffer[0] is buffer
                out.append(model(input_ids=token[:, None], **kv(model, cache)).logits[:, -1])
                token = out[-1].argmax(-1)
        logits.append(out)
    assert isinstance(cache.layers[0], GrowingLayer) and cache.get_seq_length() == 9 + 150
    for a, b in zip(*logits):
        assert torch.allclose(a, b, atol=1e-5)


def test_long_and_short_suffixes_are_prefilled_apart_with_the_same_results(tiny_model_dir):
    """A new episode's whole prompt beside other episodes' short next turns: the short rows and the long row
    are forwarded in separate passes (less padding), with the outputs and logprobs of a cold computation."""
    from transformers import AutoTokenizer

    model, _ = load_causal_lm(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    first = [tokenizer(SYSTEM + " " + p)["input_ids"] for p in PROMPTS]
    second = [
        ids + tokenizer(f" Then turn {i} said: I want {i + 1} books.")["input_ids"] for i, ids in enumerate(first)
    ]
    fresh = tokenizer(" ".join(["The pool holds three books, two hats and a ball; values differ."] * 30))["input_ids"]
    batch = [*second, fresh]
    kwargs = dict(max_new_tokens=6, temperature=0, top_p=1.0, stop_ids=set(), pad_id=0)
    cache = PrefixCache()
    sample(model, first, prefix_cache=cache, **kwargs)
    warm, prefill = sample_counting_prefills(model, batch, prefix_cache=cache, **kwargs)
    assert sorted(prefill) == sorted(
        [(len(second), max(len(b) - len(a) for a, b in zip(first, second))), (1, len(fresh))]
    )
    assert_like_a_cold_computation(model, batch, warm, kwargs)


def test_prefill_groups_trade_padding_against_passes():
    from agora.engine import prefill_groups

    # a new episode's 174-token prompts beside next turns of 120-121 tokens: two passes (1191 < 1424 in one)
    assert prefill_groups([174, 120, 121, 120, 174, 120, 174, 120]) == [[1, 3, 5, 7, 2], [0, 4, 6]]
    # a one-token retry, a short and two long suffixes: 32*3 + 1 + 88 + 2*157 = 499 beats 554 (two passes) and 660 (one)
    assert prefill_groups([157, 1, 152, 88]) == [[1], [3], [2, 0]]
    assert prefill_groups([40, 40, 40]) == [[0, 1, 2]]  # equal lengths: never split
    assert prefill_groups([1, 500], pass_cost=10_000) == [[0, 1]]  # passes dearer than any padding
    assert prefill_groups([3, 1, 2], pass_cost=0) == [[1], [2], [0]]  # free passes: no padding at all
    lengths = (
        np.random.default_rng(0).integers(1, 3000, 4096).tolist()
    )  # max_batch_size's limit, all lengths distinct-ish
    groups = prefill_groups(lengths)  # rounded to 256 widths: milliseconds, not minutes
    assert sorted(r for g in groups for r in g) == list(range(4096))
    assert all(max(lengths[r] for r in a) <= min(lengths[r] for r in b) for a, b in zip(groups, groups[1:]))


def test_greedy_rows_take_the_argmax_beside_sampled_rows(tiny_model_dir):
    """A request flagged greedy (ArenaRL's anchor) decodes as a temperature-0 policy would, inside a batch
    whose other rows sample; its logprobs are under the policy's sampling temperature."""
    sampled = LLMPolicy(LLMPolicy.Config(model=tiny_model_dir, temperature=0.8, max_new_tokens=8), seed=3)
    greedy = LLMPolicy(LLMPolicy.Config(model=tiny_model_dir, temperature=0.0, max_new_tokens=8), seed=3)
    batch = requests()
    for r in batch[::2]:
        r.greedy = True
    mixed = sampled.act(batch)
    for r, out in zip(batch, mixed):
        alone = greedy.act([ActRequest(0, "a", None, r.messages)])[0]
        assert (out.completion_ids == alone.completion_ids) == r.greedy  # sampled rows leave the argmax path
        want = recomputed_logprobs(sampled.model, out.prompt_ids, out.completion_ids, temperature=0.8)
        assert torch.allclose(torch.tensor(out.logprobs), want, atol=1e-4)


def test_a_finished_rows_prompt_and_completion_are_reused_by_a_re_prompt(tiny_model_dir):
    """After a call, the prefix cache holds each row's prompt + completion (but its last, unforwarded token):
    a re-prompt that repeats the reply and adds the parser's message computes only the message, with the
    outputs and logprobs of a cold computation."""
    from transformers import AutoTokenizer

    model, _ = load_causal_lm(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [tokenizer(SYSTEM + " " + p)["input_ids"] for p in PROMPTS[:3]]
    kwargs = dict(max_new_tokens=6, temperature=0, top_p=1.0, stop_ids=set(), pad_id=0)
    cache = PrefixCache()
    first = sample(model, prompts, prefix_cache=cache, **kwargs)
    message = tokenizer(" Your reply could not be used. Reply again.")["input_ids"]
    again = [p + tokens + message for p, (tokens, _) in zip(prompts, first)]
    warm, prefill = sample_counting_prefills(model, again, prefix_cache=cache, **kwargs)
    assert prefill == [(len(prompts), len(message) + 1)]  # the reply's last token and the message, nothing else
    assert_like_a_cold_computation(model, again, warm, kwargs)


def test_prefix_cache_is_dropped_when_the_adapter_is_switched_off(tiny_model_dir):
    """A LoRA policy sampled with its adapter, then inside `disable_adapter()` (acting as the reference): the second
    call must not reuse the adapter's keys and values, and equals a cold computation without the adapter."""
    from transformers import AutoTokenizer

    from agora.lora import LoRAConfig, load_learner

    model, _ = load_learner(tiny_model_dir, LoRAConfig(r=4, alpha=8), seed=0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [tokenizer(SYSTEM + " " + p)["input_ids"] for p in PROMPTS]
    kwargs = dict(max_new_tokens=5, temperature=0, top_p=1.0, stop_ids=set(), pad_id=0)
    cache = PrefixCache()
    with_adapter = sample(model, prompts, prefix_cache=cache, **kwargs)
    assert cache.entries
    with model.disable_adapter():
        off = sample(model, prompts, prefix_cache=cache, **kwargs)
        cold = sample(model, prompts, **kwargs)
    assert off != with_adapter and [t for t, _ in off] == [t for t, _ in cold]
    for (_, a), (_, b) in zip(off, cold):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5)
    assert cache.hits == 0
