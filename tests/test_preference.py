"""DPO / IPO / KTO losses against hand-computed values; pairs and labels from trajectories; an update."""

from __future__ import annotations

import math

import pytest
import torch

from agora.trajectory import Episode, Step
from trainers.preference import (
    Decision,
    PreferenceConfig,
    PreferenceTrainer,
    dpo_loss,
    ipo_loss,
    kto_labels,
    kto_loss,
    kto_partners,
    preference_pairs,
)

T = torch.tensor


def test_dpo_loss_by_hand():
    # h = (-1 - -1.5) - (-2 - -1.5) = 1; -log sigmoid(0.1) = log(1 + e^-0.1) = 0.644397
    loss = dpo_loss(T([-1.0]), T([-2.0]), T([-1.5]), T([-1.5]), beta=0.1)
    assert float(loss) == pytest.approx(math.log(1 + math.exp(-0.1)), abs=1e-6)
    assert float(loss) == pytest.approx(0.644397, abs=1e-6)
    smoothed = dpo_loss(T([-1.0]), T([-2.0]), T([-1.5]), T([-1.5]), beta=0.1, label_smoothing=0.1)
    assert float(smoothed) == pytest.approx(0.9 * 0.644397 + 0.1 * 0.744397, abs=1e-6)  # -log sigmoid(-0.1) = 0.744397
    # equal margins: log 2
    assert float(dpo_loss(T([-1.0]), T([-1.0]), T([-1.0]), T([-1.0]), beta=0.5)) == pytest.approx(math.log(2))


def test_ipo_loss_by_hand():
    # h = 1, target 1 / (2 * 0.1) = 5: (1 - 5)^2 = 16
    assert float(ipo_loss(T([-1.0]), T([-2.0]), T([-1.5]), T([-1.5]), beta=0.1)) == pytest.approx(16.0)
    assert float(ipo_loss(T([4.0]), T([-1.0]), T([0.0]), T([0.0]), beta=0.1)) == pytest.approx(
        0.0
    )  # h = 5 hits the target


def test_kto_loss_by_hand():
    logp, ref = T([-1.0, -2.0]), T([-1.5, -1.5])  # r = +0.5 (desirable), -0.5 (undesirable)
    desirable = T([True, False])
    mismatched, mismatched_ref = T([-3.0, -3.0]), T([-3.2, -3.2])  # z0 = 0.2
    loss, z0 = kto_loss(logp, ref, desirable, mismatched, mismatched_ref, beta=0.1, undesirable_weight=2.0)
    assert float(z0) == pytest.approx(0.2)

    def sig(x):
        return 1 / (1 + math.exp(-x))

    assert loss.tolist() == pytest.approx([1 - sig(0.1 * 0.3), 2.0 * (1 - sig(0.1 * 0.7))], abs=1e-6)
    _, z0 = kto_loss(logp, ref, desirable, T([-3.0]), T([-2.0]), beta=0.1)
    assert float(z0) == 0.0  # the reference point is clamped at 0


class TableTrainer(PreferenceTrainer):
    """KTO with r(x, y) read from a table (log pi_ref = 0): the loss by hand, and which pairs were scored."""

    def __init__(self, table, **config):
        self.table, self.scored = table, []
        super().__init__(torch.nn.Linear(1, 1), PreferenceConfig(loss="kto", **config), pad_id=0)

    def scoring_masks(self):
        return None

    def logps(self, decisions, *, reference=False):
        keys = [(d.prompt_ids[0], d.completion_ids[0]) for d in decisions]
        if reference:
            return torch.zeros(len(keys)), 0
        self.scored += keys
        w = self.model.weight.sum()
        return torch.stack([w * 0 + self.table[k] for k in keys]), len(keys)


def sig(x):
    return 1 / (1 + math.exp(-x))


def test_kto_reference_point_comes_from_mismatched_pairs_even_in_micro_batches_of_one():
    # x0 -> y0 desirable with r = 1, x1 -> y1 undesirable with r = -1; mismatched r(x0, y1) = 0.5, r(x1, y0) = 0.3.
    table = {(0, 10): 1.0, (1, 11): -1.0, (0, 11): 0.5, (1, 10): 0.3}
    items = [(Decision([0], [10]), True), (Decision([1], [11]), False)]
    trainer = TableTrainer(table, beta=1.0, micro_batch_size=1, desirable_weight=2.0, undesirable_weight=0.5)
    metrics = trainer.fit(items)
    assert set(trainer.scored) == set(table)  # each prompt with its own and with the other's completion
    # item 0: z0 = 0.5, L = 2 (1 - sigma(1 - 0.5)); item 1: z0 = 0.3, L = 0.5 (1 - sigma(0.3 + 1))
    # (matched pairs would give z0 = max(0, 1) = 1 and max(0, -1) = 0; swapped weights 0.5 and 2)
    expected = (2.0 * (1 - sig(0.5)) + 0.5 * (1 - sig(1.3))) / 2
    assert metrics["train/loss"] == pytest.approx(expected, abs=1e-6)


def test_kto_with_a_single_item_has_no_mismatched_pair_and_z0_zero():
    trainer = TableTrainer({(0, 10): 1.0}, beta=1.0, desirable_weight=2.0)
    metrics = trainer.fit([(Decision([0], [10]), True)])
    assert trainer.scored == [(0, 10)]
    assert metrics["train/loss"] == pytest.approx(2.0 * (1 - sig(1.0)), abs=1e-6)  # matched: 2 (1 - sigma(0)) = 1
    a, b, c = Decision([0], [1]), Decision([1], [2]), Decision([2], [3])
    assert kto_partners([a, b, c]) == [b, c, a] and kto_partners([a]) == [None]


def step(agent, prompt, completion, turn=0):
    return Step(
        agent=agent,
        turn=turn,
        prompt="",
        text="",
        action=None,
        prompt_ids=prompt,
        completion_ids=completion,
        logprobs=[-1.0] * len(completion),
    )


def test_pairs_and_labels_come_from_each_groups_best_and_worst():
    episodes = [
        Episode(0, 7, {}, [step("a", [1, 2], [5]), step("a", [1, 2, 9], [6], 1)], returns={"a": 8.0}),
        Episode(1, 7, {}, [step("a", [1, 2], [7])], returns={"a": 2.0}),
        Episode(2, 7, {}, [step("a", [1, 2], [8])], returns={"a": 5.0}),
        Episode(3, 9, {}, [step("a", [3], [4])], returns={"a": 1.0}),  # a group with one trajectory
    ]
    pairs = preference_pairs(episodes, ["a"])
    assert [(c.prompt_ids, c.completion_ids, r.completion_ids) for c, r in pairs] == [
        ([1, 2], [5], [7])
    ]  # only the shared prompt
    assert preference_pairs(episodes, ["a"], min_margin=7.0) == []
    labels = kto_labels(episodes, ["a"])  # group mean 5: episode 0 desirable, 1 undesirable, 2 tied (left out)
    assert [(d.completion_ids, good) for d, good in labels] == [([5], True), ([6], True), ([7], False)]
    lost = [Episode(k, 7, {}, [step("a", [1, 2], [k])], returns={"a": r}) for k, r in enumerate([-1.0, -1.0, 0.0])]
    assert kto_labels(lost[:2], ["a"]) == []  # every game lost alike: no label relative to the group's mean
    outcome = kto_labels(lost + episodes[:1], ["a"], "outcome")  # by the return's sign; 0 unlabelled
    assert [(d.completion_ids, good) for d, good in outcome] == [([0], False), ([1], False), ([5], True), ([6], True)]


@pytest.mark.parametrize("loss", ["dpo", "ipo", "kto"])
def test_a_preference_update_favours_the_chosen_completion(tiny_model_dir, loss):
    from agora.lora import LoRAConfig, load_learner

    model, tokenizer = load_learner(tiny_model_dir, LoRAConfig(r=4, alpha=8), seed=0)
    prompt = tokenizer("Which colour is the sky?")["input_ids"]
    good, bad = tokenizer(" Blue.")["input_ids"], tokenizer(" Green cheese.")["input_ids"]
    episodes = [
        Episode(0, 7, {}, [step("a", prompt, good)], returns={"a": 1.0}),
        Episode(1, 7, {}, [step("a", prompt, bad)], returns={"a": 0.0}),
    ]
    trainer = PreferenceTrainer(
        model, PreferenceConfig(loss=loss, learning_rate=1e-2, epochs=3), pad_id=tokenizer.pad_token_id
    )

    def margin():
        with torch.no_grad():
            logp, _ = trainer.logps([Decision(prompt, good), Decision(prompt, bad)])
        return float(logp[0] - logp[1])

    before = margin()
    metrics = trainer.update(episodes, ["a"])
    assert metrics["train/optimizer_steps"] == 3
    assert margin() > before


def test_token_chunks_keep_padded_size_within_the_limit():
    from trainers.preference import token_chunks

    lengths = [3, 5, 2, 9, 1, 1]  # prompt + completion tokens
    decisions = [Decision([0] * (n - 1), [1]) for n in lengths]
    # padded size of a chunk = rows x its longest sequence: [3, 5] -> 10, then 2 would make 15 > 10; 9 alone (>= 10
    # with another); [1, 1] -> 2
    assert token_chunks(decisions, 10) == [[0, 1], [2], [3], [4, 5]]
    assert token_chunks(decisions, 4) == [[0], [1], [2], [3], [4, 5]]  # 5 and 9 exceed the limit: one each
    assert token_chunks(decisions, 1000) == [list(range(6))]


@pytest.mark.parametrize("loss", ["dpo", "kto"])
def test_chunked_scoring_bounds_each_pass_and_keeps_loss_and_gradients(tiny_model_dir, loss):
    from agora.lora import LoRAConfig, load_learner

    model, tokenizer = load_learner(tiny_model_dir, LoRAConfig(r=4, alpha=8), seed=0)
    texts = ["Which colour is the sky?", "Name a prime number bigger than ten, please.", "Hi", "Say yes or no."]
    prompts = [tokenizer(t)["input_ids"] for t in texts]
    good, bad = tokenizer(" Blue.")["input_ids"], tokenizer(" Green cheese, I think.")["input_ids"]
    if loss == "dpo":
        batch = [(Decision(p, good), Decision(p, bad)) for p in prompts]
    else:
        batch = [(Decision(p, good if k % 2 else bad), k % 2 == 0) for k, p in enumerate(prompts)]
        partners = kto_partners([d for d, _ in batch])
        batch = [(d, label, partner) for (d, label), partner in zip(batch, partners)]
    widths = []
    hook = model.get_base_model().model.register_forward_pre_hook(
        lambda _, args, kwargs: widths.append(kwargs["input_ids"].numel()) if torch.is_grad_enabled() else None,
        with_kwargs=True,
    )

    def run(limit):
        trainer = PreferenceTrainer(
            model, PreferenceConfig(loss=loss, max_tokens_per_pass=limit), pad_id=tokenizer.pad_token_id
        )
        trainer.masks = trainer.scoring_masks()
        model.zero_grad(set_to_none=True)
        widths.clear()
        out, margins, _ = trainer.batch_loss(batch)
        forwards = len(widths)
        out.mean().backward()
        grads = [p.grad.clone() for p in trainer.parameters]
        return out.detach(), margins, grads, list(widths), forwards

    whole, whole_margins, whole_grads, whole_widths, _ = run(None)
    longest = max(len(p) for p in prompts) + len(bad)
    chunked, chunked_margins, chunked_grads, chunked_widths, forwards = run(longest)
    hook.remove()
    assert max(whole_widths) > longest  # the micro-batch in one pass is wider than the limit
    assert max(chunked_widths) <= longest  # forward and backward recomputation: one sequence a pass
    assert len(whole_widths) == (2 if loss == "dpo" else 1)  # chosen and rejected, or the labelled decisions
    assert forwards > len(whole_widths)
    assert len(chunked_widths) == 2 * forwards  # each chunk recomputed in the backward pass, not kept alive
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)  # the same pair/item in the same place
    assert chunked_margins == pytest.approx(whole_margins, abs=1e-4)
    for a, b in zip(chunked_grads, whole_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
