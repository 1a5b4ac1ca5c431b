"""Generation and scoring of token sequences: the one engine the LLM policy and every trainer use.

Sampling is a plain KV-cached loop rather than `model.generate`, for two reasons: each prompt draws
from its own explicit `torch.Generator` seeded by its request (no global RNG; a row's sample does
not depend on which prompts share its batch), and it returns the logprob of
every sampled token under the sampling distribution, log softmax(logits / T), which the trainers
use as pi_old; `agora.scoring` recomputes those logprobs, with gradients, from the exact prompt +
completion ids.

- `sample`: batched sampling with a prefix cache (`PrefixCache`), an in-place growing KV layer
  (`GrowingLayer`) and prefill passes grouped by suffix length (`prefill_groups`);
"""

from __future__ import annotations

import inspect
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers.cache_utils import DynamicLayer

from agora.constrain import Constraints, masked

if TYPE_CHECKING:
    from transformers import DynamicCache


def stop_token_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


class PrefixCache:
    """KV of recently computed prompts (with their completions), reused across calls (LRU, bounded in bytes).

    Consecutive calls of a policy share long prefixes: the chat template, the world's
    demonstration and fixed instructions across episodes, within an episode a turn's prompt
    usually extends the same agent's previous prompt, and a re-prompt after an unparseable reply
    repeats the prompt and the reply. The KV of the longest cached match is
    cropped to the shared length and only the rest is computed. Entries are dropped when any
    model parameter changes in place (an optimizer step, a loaded checkpoint) or a peft model's adapters
    are switched off or on, so a training loop never samples from stale keys.
    """

    MIN_TOKENS = 16  # shorter matches are cheaper to recompute than to copy

    def __init__(self, max_bytes: int = 2**30, weights_key=None):
        """`weights_key()`, when given, names the weights the model holds at each lookup instead of
        the parameters' in-place version counters: for a policy whose frozen adapter is swapped in and
        out of a shared model (a league version), so that its entries survive the other versions' turns."""
        self.max_bytes, self.weights_key = max_bytes, weights_key
        self.entries: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        self.bytes = 0
        self.fingerprint: tuple | None = None
        self.hits = self.reused_tokens = 0

    def _check(self, model) -> None:
        weights = self.weights_key() if self.weights_key else tuple(p._version for p in model.parameters())
        fingerprint = (id(model), weights, str(getattr(model, "active_adapters", "")), adapters_disabled(model))
        if fingerprint != self.fingerprint:
            self.entries.clear()
            self.bytes = 0
            self.fingerprint = fingerprint

    def longest_match(self, model, ids: list[int]) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """(n, layers): the KV of the first n tokens of `ids` from the best entry, or (0, None)."""
        self._check(model)
        best, best_key = 0, None
        for key in self.entries:
            n = shared_length(key, ids)
            if n > best:
                best, best_key = n, key
        if best < self.MIN_TOKENS:
            return 0, None
        self.entries.move_to_end(best_key)
        return best, [(k[..., :best, :], v[..., :best, :]) for k, v in self.entries[best_key]]

    def count(self, tokens: int) -> None:
        """A lookup that skipped computing `tokens` prompt tokens."""
        self.hits += 1
        self.reused_tokens += tokens

    def fits(self, tokens: int, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> bool:
        """Whether an entry of `tokens` tokens shaped like `layers` (one row) is worth storing."""
        per_token = sum(
            k[0, :, 0].numel() * k.element_size() + v[0, :, 0].numel() * v.element_size() for k, v in layers
        )
        return self.MIN_TOKENS <= tokens and tokens * per_token <= self.max_bytes

    def store(self, ids: list[int], layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        if not self.fits(len(ids), layers):
            return
        key = tuple(ids)
        for old in [k for k in self.entries if len(k) <= len(key) and key[: len(k)] == k]:
            self._drop(old)  # a prefix of the new entry: cropping the new one gives it back
        if key in self.entries:
            self._drop(key)
        self.entries[key] = layers
        self.bytes += _nbytes(layers)
        while self.bytes > self.max_bytes:
            self._drop(next(iter(self.entries)))

    def _drop(self, key: tuple[int, ...]) -> None:
        self.bytes -= _nbytes(self.entries.pop(key))


def adapters_disabled(model) -> bool:
    """Whether a peft model runs with its adapters off (inside `disable_adapter()`, e.g. to act as the reference):
    then the same weights compute other keys and values, so a prefix cache must not mix the two."""
    if not hasattr(model, "disable_adapter"):  # not a peft model: nothing to walk
        return False
    # `disable_adapter()` switches every LoRA layer together: the first one tells
    layer = next((m for m in model.modules() if hasattr(m, "lora_A")), None)
    return layer is not None and getattr(layer, "disable_adapters", False) is True


def _nbytes(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)


def shared_length(a, b) -> int:
    """Length of the common prefix of two token sequences."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


class GrowingLayer(DynamicLayer):
    """A full-attention KV layer that appends into spare capacity in place.

    transformers' DynamicLayer concatenates the whole cache with every new token, so each decode
    step copies O(length) memory per layer: at batch 8 and 700 cached tokens that copy costs as
    much as all of the model's matmuls on a CPU. This layer writes the new keys and values into
    a buffer with room to spare (grown by a quarter when full) and hands out views of the filled
    part; anything that replaces `keys` (row selection, repetition) starts a fresh buffer.
    """

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, new = self.get_seq_length(), key_states.shape[-2]
        buffer = getattr(self, "_buffer", None)
        if (
            buffer is None
            or self.keys.data_ptr() != buffer[0].data_ptr()
            or buffer[0].shape[0] != key_states.shape[0]
            or n + new > buffer[0].shape[-2]
        ):
            capacity = n + new + max(128, (n + new) // 4)
            buffer = tuple(s.new_empty((*s.shape[:-2], capacity, s.shape[-1])) for s in (key_states, value_states))
            if n:
                buffer[0][..., :n, :] = self.keys
                buffer[1][..., :n, :] = self.values
            self._buffer = buffer
        buffer[0][..., n : n + new, :] = key_states
        buffer[1][..., n : n + new, :] = value_states
        self.keys, self.values = buffer[0][..., : n + new, :], buffer[1][..., : n + new, :]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the `indices` rows: one copy into a buffer with the same spare room (DynamicLayer's
        indexing would copy them once here and again into a fresh buffer on the next update)."""
        n, buffer = self.get_seq_length(), getattr(self, "_buffer", None)
        if not n or buffer is None or self.keys.data_ptr() != buffer[0].data_ptr():
            return super().batch_select_indices(indices)
        self._buffer = tuple(b.index_select(0, indices.to(b.device)) for b in buffer)
        self.keys, self.values = self._buffer[0][..., :n, :], self._buffer[1][..., :n, :]

    @classmethod
    def holding(cls, keys: torch.Tensor, values: torch.Tensor, length: int | None = None) -> GrowingLayer:
        """A layer whose buffer IS (keys, values); the first `length` positions (default all) are filled."""
        layer = cls()
        layer.lazy_initialization(keys, values)
        layer._buffer = (keys, values)
        n = keys.shape[-2] if length is None else length
        layer.keys, layer.values = keys[..., :n, :], values[..., :n, :]
        return layer


def growing_cache(model, layers: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> "DynamicCache":
    """A KV cache of GrowingLayers (holding `layers` when given, without copying them), or
    transformers' own DynamicCache when the model has layers other than full attention."""
    from transformers import DynamicCache

    if hasattr(model, "new_cache"):  # a model that keeps its own caches (`agora.mixture.GeometricMixture`)
        return model.new_cache()
    if not _full_attention(model.config):
        return DynamicCache(ddp_cache_data=layers) if layers is not None else DynamicCache(config=model.config)
    cache = DynamicCache()
    cache.layer_class_to_replicate = GrowingLayer
    cache.layers = [GrowingLayer.holding(k, v) for k, v in layers or []]
    return cache


def _full_attention(config) -> bool:
    from transformers import DynamicCache

    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=config).layers)


def _plain_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """The (keys, values) of every layer of a batch-1 DynamicCache, or None for other layer kinds."""
    if not all(type(layer) in (DynamicLayer, GrowingLayer) for layer in cache.layers):
        return None  # sliding-window and other layers cannot simply be cropped and extended
    return [(layer.keys, layer.values) for layer in cache.layers]


def _context(
    model, prompts: list[list[int]], prefix_cache: PrefixCache | None, device, new_tokens: int
) -> tuple["DynamicCache", list[int]]:
    """The KV cache each row resumes from, and how many of its prompt tokens it covers.

    The batch's common prefix is computed once at batch size 1 (or taken from `prefix_cache`).
    With a prefix cache, each row then resumes from its own longest cached prefix (typically its
    episode's previous prompt), right-aligned in a (batch, heads, M, dim) cache whose unused
    columns the attention mask skips; without one (or for layers that cannot be cropped) the
    common prefix's KV is repeated over the rows. Room is reserved for the suffixes and `new_tokens`.
    """
    batch = len(prompts)
    shared = common_prefix_length(prompts)
    base: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    if shared:
        prefix = prompts[0][:shared]
        reused, layers = prefix_cache.longest_match(model, prefix) if prefix_cache else (0, None)
        if reused:
            prefix_cache.count(reused)
        cache = growing_cache(model, [(k.clone(), v.clone()) for k, v in layers] if layers is not None else None)
        if reused < shared:
            model(
                input_ids=torch.tensor([prefix[reused:]], device=device),
                **kv(model, cache),
                position_ids=torch.arange(reused, shared, device=device)[None],
                **last_logits_only(model),
            )
        base = _plain_layers(cache)
        if prefix_cache is None or base is None:
            cache.batch_repeat_interleave(batch)
            return cache, [shared] * batch
        if reused < shared:
            prefix_cache.store(prefix, [(k.contiguous(), v.contiguous()) for k, v in base])
    if prefix_cache is None:
        return growing_cache(model), [0] * batch
    found = [prefix_cache.longest_match(model, p[:-1]) for p in prompts]  # each row computes >= 1 token
    found = [(n, layers) if n >= shared else (shared, base) for n, layers in found]
    for n, _ in found:
        if n > shared:  # beyond the common prefix: the row's own earlier prompt
            prefix_cache.count(n - shared)
    width = max(n for n, _ in found)
    if width == 0:
        return growing_cache(model), [0] * batch
    spare = max(len(p) - n for p, (n, _) in zip(prompts, found)) + new_tokens
    out = []
    template = next(layers for n, layers in found if layers is not None)
    for index, (k0, v0) in enumerate(template):
        keys = k0.new_zeros((batch, k0.shape[1], width + spare, k0.shape[3]))
        values = v0.new_zeros((batch, v0.shape[1], width + spare, v0.shape[3]))
        for row, (n, layers) in enumerate(found):
            if n:
                keys[row, :, width - n : width] = layers[index][0][0, :, :n]
                values[row, :, width - n : width] = layers[index][1][0, :, :n]
        out.append((keys, values))
    cache = growing_cache(model)
    cache.layers = [GrowingLayer.holding(k, v, width) for k, v in out]  # full attention: base was plain
    return cache, [n for n, _ in found]


def last_logits_only(model) -> dict[str, int]:
    """Forward kwargs that make the LM head score the last position only (a prefill needs no more;
    on a 49k vocabulary the head over every position costs as much as the rest of the model)."""
    supports = getattr(model, "_supports_logits_to_keep", None)
    return {"logits_to_keep": 1} if supports is not None and supports() else {}


def kv(model, cache) -> dict:
    """The forward kwarg carrying a KV cache: `cache` where the model's forward takes it (transformers
    deprecates `past_key_values` for it, warning in users' terminals), else `past_key_values`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft forwards **kwargs
    return {"cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values": cache}


PASS_COST = 32  # a forward pass's fixed cost, in prompt tokens computed (on a CPU: reading every weight once)


def prefill_groups(lengths: list[int], pass_cost: int = PASS_COST, max_widths: int = 256) -> list[list[int]]:
    """Rows grouped into prefill passes: contiguous runs of the rows sorted by suffix length, chosen
    to minimise sum over passes of (pass_cost + rows x longest suffix), i.e. padding plus passes.

    A dynamic programme over the distinct lengths (rows of one length never split), O(widths^2);
    beyond `max_widths` distinct lengths they are first rounded up to `max_widths` steps, so a batch
    of thousands of rows is grouped in milliseconds.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    step = -(-max(lengths, default=0) // max_widths) if len(set(lengths)) > max_widths else 1
    width = [-(-lengths[r] // step) * step for r in order]  # per sorted row: the width its pass pays for it
    # the last row of each width, +1
    ends = [k + 1 for k in range(len(order)) if k + 1 == len(order) or width[k + 1] != width[k]]
    best, cut = {0: 0}, {}
    for i in ends:  # best[i]: cost of the shortest i rows
        best[i], cut[i] = min((best[j] + pass_cost + (i - j) * width[i - 1], j) for j in [0, *ends[: ends.index(i)]])
    groups, i = [], len(order)
    while i:
        groups.append(order[cut[i] : i])
        i = cut[i]
    return groups[::-1]


def _prefill(
    model,
    cache,
    input_ids: torch.Tensor,
    attention: torch.Tensor,
    positions: torch.Tensor,
    context: int,
    lengths: list[int],
) -> torch.Tensor:
    """Forward the left-padded suffixes into `cache`; the last position's logits per row.

    When suffix lengths differ (a new episode's whole prompt beside other episodes' short next
    turns, a one-token retry beside long prompts), padding every row to the longest wastes most
    of the pass. Then the rows are forwarded in groups of similar length (`prefill_groups`), each
    padded to its own longest, and their KV is written into the shared buffers exactly where one
    pass would have put it.
    """
    batch, width = input_ids.shape
    groups = prefill_groups(lengths)
    layers = cache.layers
    ready = all(
        type(layer) is GrowingLayer
        and layer.is_initialized
        and layer.keys.data_ptr() == layer._buffer[0].data_ptr()
        and layer.get_seq_length() == context
        and layer._buffer[0].shape[-2] >= context + width
        for layer in layers
    )
    if not layers or not ready or len(groups) == 1:
        return model(
            input_ids=input_ids,
            attention_mask=attention,
            position_ids=positions,
            **kv(model, cache),
            **last_logits_only(model),
        ).logits[:, -1]
    logits = None
    for rows in groups:
        index = torch.tensor(rows, device=input_ids.device)
        w = max(lengths[r] for r in rows)
        part = growing_cache(model)
        part.layers = [
            GrowingLayer.holding(
                layer._buffer[0][index, :, : context + w], layer._buffer[1][index, :, : context + w], context
            )
            for layer in layers
        ]
        out = model(
            input_ids=input_ids[index, width - w :],
            attention_mask=torch.cat([attention[index, :context], attention[index, context + width - w :]], dim=-1),
            position_ids=positions[index, width - w :],
            **kv(model, part),
            **last_logits_only(model),
        ).logits[:, -1]
        logits = out.new_empty((batch, out.shape[-1])) if logits is None else logits
        logits[index] = out
        for layer, piece in zip(layers, part.layers):
            layer._buffer[0][index, :, context + width - w : context + width] = piece.keys[:, :, context:]
            layer._buffer[1][index, :, context + width - w : context + width] = piece.values[:, :, context:]
    for layer in layers:
        layer.keys, layer.values = (
            layer._buffer[0][..., : context + width, :],
            layer._buffer[1][..., : context + width, :],
        )
    return logits


@torch.inference_mode()
def sample(
    model,
    prompts: list[list[int]],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    stop_ids: set[int],
    pad_id: int,
    generators: Sequence[torch.Generator] | None = None,
    prefix_cache: PrefixCache | None = None,
    greedy: list[bool] | None = None,
    grammars: Sequence[str | None] | None = None,
    tokenizer=None,
) -> list[tuple[list[int], list[float]]]:
    """Sample a completion for every prompt in one batch with a KV cache.

    Each row resumes from the KV of the longest prompt prefix already known (`_context`: the
    batch's common prefix, or with `prefix_cache` the row's own cached prefix, e.g. its episode's
    previous turn) and computes only the rest of its prompt; these suffixes are left-padded, and
    the attention mask and position ids skip every padding column. Each row's prompt and completion
    go back into `prefix_cache` when it finishes (`_remember`). Rows that have sampled a stop token leave the batch, so
    the decode steps cost only what is still running. Returns, per prompt, the completion token
    ids (the stop token included when one was sampled) and log pi(token) = log softmax(logits / T)
    at each position (T = 1 when greedy). Rows flagged in `greedy` take the most likely token
    while the others sample at `temperature`; their logprobs are still under T, the policy whose
    data they are. Row i draws from `generators[i]` alone (`draw_tokens`: one uniform per token),
    so its completion depends on its own prompt and generator, not on the rest of the batch (up to
    the float noise of batched forward passes); `generators` may be None only when nothing samples.

    `grammars` (Lark texts, `agora.grammar.Grammar.lark`; None for a free row) constrain rows to a
    reply language: at each step a row's disallowed tokens get the logit `constrain.MASKED` before
    the softmax (`constrain.Constraints`, llguidance, which needs `tokenizer`), so its tokens and
    logprobs are those of the masked distribution, the one the trainers rescore it under.
    """
    device = next(model.parameters()).device
    batch = len(prompts)
    cache, known = _context(model, prompts, prefix_cache, device, new_tokens=max_new_tokens)
    context = max(known)
    suffixes = [p[n:] for p, n in zip(prompts, known)]
    width = max(len(s) for s in suffixes)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)
    mask = torch.zeros((batch, context + width), dtype=torch.long)
    for row, (ids, n) in enumerate(zip(suffixes, known)):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        mask[row, context - n : context] = 1
        mask[row, context + width - len(ids) :] = 1
    input_ids, attention = input_ids.to(device), mask.to(device)
    positions = torch.tensor(known, device=device)[:, None] + (attention[:, context:].cumsum(-1) - 1).clamp(min=0)
    stop = torch.tensor(sorted(stop_ids), device=device)
    logits = _prefill(model, cache, input_ids, attention, positions, context, [len(s) for s in suffixes])
    remember = prefix_cache is not None and _plain_layers(cache) is not None
    rows = torch.arange(batch, device=device)  # original index of each row still decoding
    drawing = [temperature > 0 and not (greedy and greedy[row]) for row in range(batch)]  # by original row
    if any(drawing) and (generators is None or len(generators) != batch):
        raise ValueError("sampling needs one generator per prompt")
    tokens: list[list[int]] = [[] for _ in range(batch)]
    logps: list[list[float]] = [[] for _ in range(batch)]
    constraints = Constraints(tokenizer, logits.shape[-1], grammars) if grammars and any(grammars) else None
    for step in range(max_new_tokens):
        live = rows.tolist()
        scaled = logits.float() / (temperature if temperature > 0 else 1.0)
        if constraints is not None:
            scaled = masked(scaled, constraints.allowed(live, stop))
        logp = torch.log_softmax(scaled, dim=-1)
        draw = [k for k, row in enumerate(live) if drawing[row]]
        if not draw:
            token = logp.argmax(-1)
        else:
            probs = logp.exp()
            if top_p < 1.0:
                probs = nucleus(probs, top_p)
            drawn = draw_tokens(probs[draw] if len(draw) < len(live) else probs, [generators[live[k]] for k in draw])
            if len(draw) < len(live):
                token = logp.argmax(-1)
                token[torch.tensor(draw, device=device)] = drawn
            else:
                token = drawn
        chosen = logp.gather(-1, token[:, None]).squeeze(-1)
        drawn_ids = token.tolist()
        for row, t, lp in zip(live, drawn_ids, chosen.tolist()):
            tokens[row].append(t)
            logps[row].append(lp)
        if constraints is not None:
            constraints.advance(live, drawn_ids)
        running = ~torch.isin(token, stop) if step + 1 < max_new_tokens else torch.zeros_like(token, dtype=torch.bool)
        if remember and not bool(running.all()):
            finished = {k: int(rows[k]) for k in (~running).nonzero().squeeze(-1).tolist()}
            _remember(prefix_cache, cache, attention, {k: prompts[r] + tokens[r][:-1] for k, r in finished.items()})
        if not bool(running.any()):
            break
        if not bool(running.all()):  # finished rows leave the batch
            keep = running.nonzero().squeeze(-1)
            rows, token, attention, positions = rows[keep], token[keep], attention[keep], positions[keep]
            cache.batch_select_indices(keep)
        attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=-1)
        positions = positions[:, -1:] + 1
        logits = model(
            input_ids=token[:, None], attention_mask=attention, position_ids=positions, **kv(model, cache)
        ).logits[:, -1]
    return list(zip(tokens, logps))


def _remember(prefix_cache: PrefixCache, cache, attention: torch.Tensor, finished: dict[int, list[int]]) -> None:
    """Store in `prefix_cache` the KV of each finished row k of the decode batch: its prompt and
    completion but the last token (not forwarded yet), `finished[k]`; the attention mask's nonzero
    columns are that row's tokens. A re-prompt after an unparseable reply (prompt, the reply, the parser's
    message) then computes only the message, and a turn that extends the prompt still finds it."""
    layers = _plain_layers(cache)
    for k, ids in finished.items():
        if prefix_cache.fits(len(ids), layers):
            columns = attention[k].nonzero().squeeze(-1)
            prefix_cache.store(
                ids, [(a[k : k + 1].index_select(2, columns), b[k : k + 1].index_select(2, columns)) for a, b in layers]
            )


def common_prefix_length(prompts: list[list[int]]) -> int:
    """Tokens every prompt starts with, leaving each at least one token of its own."""
    shortest = min(len(p) for p in prompts)
    n = 0
    while n < shortest - 1 and all(p[n] == prompts[0][n] for p in prompts):
        n += 1
    return n


def draw_tokens(probs: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One token per row of `probs` [B, V] by inverse-CDF sampling: row i takes the first token whose
    cumulative probability (accumulated in float64) exceeds u_i x total, u_i ~ U[0, 1) drawn from
    `generators[i]` (a CPU generator: the same draws on any device). One uniform per row and token,
    so a row's draws never depend on the other rows; and cheaper than torch.multinomial, which
    draws an exponential per vocabulary entry (16 x 49k: 6 vs 80 ms on our loaded CPU)."""
    u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in generators]).to(probs.device)
    cdf = torch.cumsum(probs, -1, dtype=torch.float64)
    token = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).squeeze(-1)
    return token.clamp_(max=probs.shape[-1] - 1)  # u x total < total: only rounding could reach V


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches top_p (renormalised)."""
    sorted_probs, index = probs.sort(dim=-1, descending=True)
    outside = sorted_probs.cumsum(-1) - sorted_probs > top_p
    sorted_probs = sorted_probs.masked_fill(outside, 0.0)
    kept = torch.zeros_like(probs).scatter(-1, index, sorted_probs)
    return kept / kept.sum(-1, keepdim=True)
