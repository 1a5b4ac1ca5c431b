"""SkinnyLinear: the few-row CPU inference product computes what nn.Linear computes."""

from __future__ import annotations

import pytest
import torch

import agora.kernels as kernels
from agents.llm import LLMPolicy
from agora.kernels import MAX_ROWS, SkinnyLinear, choices, describe, skinny_is_faster, use_skinny_linears
from agora.models import load_causal_lm
from agora.policy import ActRequest


@pytest.fixture(autouse=True)
def forced(monkeypatch):
    monkeypatch.setenv("AGORA_SKINNY_LINEAR", "1")  # whatever this machine's timing says


def pair(bias: bool) -> tuple[torch.nn.Linear, torch.nn.Linear]:
    torch.manual_seed(0)
    plain = torch.nn.Linear(48, 80, bias=bias)
    skinny = torch.nn.Linear(48, 80, bias=bias)
    skinny.load_state_dict(plain.state_dict())
    use_skinny_linears(skinny)
    return plain, skinny


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize(
    "shape", [(1, 48), (2, 48), (3, 48), (8, 48), (1, 1, 48), (4, 1, 48), (2, 5, 48), (MAX_ROWS + 8, 48)]
)
def test_same_outputs_as_nn_linear_for_every_row_count(bias, shape):
    plain, skinny = pair(bias)
    assert type(skinny) is SkinnyLinear and isinstance(skinny, torch.nn.Linear)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want, got = plain(x), skinny(x)
    assert got.shape == want.shape and got.is_contiguous()
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)


def test_training_keeps_pytorchs_kernel_and_gradients():
    plain, skinny = pair(True)
    x = torch.randn(3, 48, requires_grad=True)
    out = skinny(x)
    assert torch.equal(out, plain(x))  # grad on: nn.Linear's own forward, bit for bit
    out.sum().backward()
    assert skinny.weight.grad is not None and x.grad is not None


def test_other_dtypes_fall_back_to_nn_linear():
    plain, skinny = pair(False)
    plain, skinny = plain.to(torch.bfloat16), skinny.to(torch.bfloat16)
    x = torch.randn(2, 48, dtype=torch.bfloat16)
    with torch.inference_mode():
        assert torch.equal(skinny(x), plain(x))


def test_cpu_models_get_skinny_linears_and_peft_still_wraps_them(tiny_model_dir, monkeypatch):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    monkeypatch.delenv("AGORA_SKINNY_LINEAR")
    model, _ = load_causal_lm(tiny_model_dir)  # switched or not by this machine's timing
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all((type(m) is SkinnyLinear) == skinny_is_faster(m.weight.detach()) for m in linears)
    monkeypatch.setenv("AGORA_SKINNY_LINEAR", "1")

    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    assert set(plain.state_dict()) == set(model.state_dict())
    ids = torch.randint(3, plain.config.vocab_size, (3, 7), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.allclose(model(ids).logits, plain(ids).logits, atol=1e-5)

    skinny = use_skinny_linears(AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval())
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    lora = get_peft_model(skinny, config)
    assert type(lora.base_model.model.model.layers[0].self_attn.q_proj.base_layer) is SkinnyLinear
    with torch.inference_mode():
        out = lora(ids).logits
    loss = lora(ids).logits.float().logsumexp(-1).mean()  # grad on: trains through nn.Linear's kernel
    loss.backward()
    assert out.shape == (3, 7, plain.config.vocab_size)
    assert any(p.grad is not None for n, p in lora.named_parameters() if "lora_" in n)


def test_the_choice_follows_timing_unless_forced(monkeypatch):
    monkeypatch.setenv("AGORA_SKINNY_LINEAR", "0")
    assert type(pair(False)[1]) is torch.nn.Linear  # forced off
    monkeypatch.delenv("AGORA_SKINNY_LINEAR")
    monkeypatch.setattr(kernels, "_verdicts", {(80, 48): False})  # timed slower here: left alone
    assert type(pair(False)[1]) is torch.nn.Linear
    monkeypatch.setattr(kernels, "_verdicts", {})
    weight = torch.randn(4096, 256)
    assert skinny_is_faster(weight) == kernels._verdicts[(4096, 256)]  # timed once, then remembered
    monkeypatch.setattr(kernels, "_verdicts", {(80, 48): True})
    assert type(pair(False)[1]) is SkinnyLinear
    bf16 = torch.nn.Linear(48, 80).to(torch.bfloat16)
    assert type(use_skinny_linears(bf16)) is torch.nn.Linear  # float32 only


def two_shapes() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(48, 80), torch.nn.ReLU(), torch.nn.Linear(80, 16))


def test_each_weight_shape_is_timed_and_switched_on_its_own(monkeypatch):
    """The README's promise: timed per weight shape (not the largest weight's verdict for all)."""
    monkeypatch.delenv("AGORA_SKINNY_LINEAR")
    timed = []
    monkeypatch.setattr(kernels, "_verdicts", {})
    real = kernels.skinny_is_faster
    monkeypatch.setattr(kernels, "skinny_is_faster", lambda w: timed.append(tuple(w.shape)) or real(w))
    use_skinny_linears(two_shapes())
    assert sorted(set(timed)) == [(16, 80), (80, 48)] and set(kernels._verdicts) == {(16, 80), (80, 48)}

    monkeypatch.setattr(kernels, "skinny_is_faster", real)
    monkeypatch.setattr(kernels, "_verdicts", {(80, 48): True, (16, 80): False})
    model = use_skinny_linears(two_shapes())
    assert [type(model[0]), type(model[2])] == [SkinnyLinear, torch.nn.Linear]
    assert choices(model) == {"80x48": "wx", "16x80": "xw"} and describe(model) == "wx: 80x48; xw: 16x80"


def test_a_pinned_kernel_beats_timing_and_the_environment(monkeypatch):
    monkeypatch.setattr(kernels, "_verdicts", {(80, 48): True, (16, 80): False})
    model = two_shapes()
    assert describe(use_skinny_linears(model, "xw")) == "xw"  # AGORA_SKINNY_LINEAR=1 here: the pin wins
    assert describe(use_skinny_linears(model, "wx")) == "wx"  # and can be changed back
    monkeypatch.setenv("AGORA_SKINNY_LINEAR", "0")
    assert describe(use_skinny_linears(model)) == "xw"  # the environment pins "auto"
    with pytest.raises(ValueError, match="auto, xw, wx"):
        use_skinny_linears(model, "fast")


def test_an_llm_policy_pins_and_reports_its_kernel(tiny_model_dir, monkeypatch):
    """Each pin loads its own copy of the model; a pinned kernel reproduces logprobs bit for bit, and the
    two kernels agree to float rounding."""
    monkeypatch.delenv("AGORA_SKINNY_LINEAR")
    request = ActRequest(0, "a", None, [{"role": "user", "content": "Pick rock, paper or scissors."}], seed=11)

    def play(kernel: str):
        config = LLMPolicy.Config(model=tiny_model_dir, temperature=1.0, max_new_tokens=5, linear_kernel=kernel)
        policy = LLMPolicy(config, seed=0)
        return policy, policy.act([request])[0]

    (xw, a), (wx, b), (_, c) = play("xw"), play("wx"), play("wx")
    assert (xw.linear_kernel, wx.linear_kernel) == ("xw", "wx") and xw.model is not wx.model
    assert c.completion_ids == b.completion_ids and c.logprobs == b.logprobs
    assert a.completion_ids == b.completion_ids
    assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4)
    # what `agora run` tags the run with: each LLM seat's kernel; a scripted seat has nothing to record
    from agents.scripted.matrix import MixedStrategy
    from agora.policy import policy_tags

    scripted = MixedStrategy(MixedStrategy.Config(), seed=0)
    assert policy_tags({"alice": xw, "bob": wx, "carol": scripted}) == {"agora.kernel": "alice=xw, bob=wx"}
    timed = LLMPolicy(LLMPolicy.Config(model=tiny_model_dir), seed=0).model  # auto: each shape's verdict
    want = {"x".join(map(str, shape)): "wx" if fast else "xw" for shape, fast in kernels._verdicts.items()}
    assert choices(timed) == {shape: want[shape] for shape in choices(timed)}


def test_a_runs_recorded_per_shape_kernels_pin_the_same_choices(monkeypatch):
    """The `agora.kernel` tag of a run whose shapes chose differently, given back as `linear_kernel`,
    makes the same choices whatever the timing says now."""
    monkeypatch.delenv("AGORA_SKINNY_LINEAR", raising=False)
    monkeypatch.setattr(kernels, "_verdicts", {(80, 48): True, (16, 80): False})
    recorded = describe(use_skinny_linears(two_shapes()))
    assert recorded == "wx: 80x48; xw: 16x80"
    monkeypatch.setattr(kernels, "_verdicts", {(80, 48): False, (16, 80): True})  # this load would time otherwise
    assert describe(use_skinny_linears(two_shapes(), recorded)) == recorded
    with pytest.raises(ValueError, match="not a weight shape"):
        use_skinny_linears(two_shapes(), "wx: big")
