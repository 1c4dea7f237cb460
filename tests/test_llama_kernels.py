"""palr.plugins.llama_lora.kernels: block-causal attention, bulk dropout masks, the fused LoRA projection and
RMS norm compute what transformers' SDPA attention, torch's dropout, peft's LoRA layer and
transformers' LlamaRMSNorm compute."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from palr.plugins.llama_lora.config import LoraSettings
from palr.plugins.llama_lora.kernels import (
    BLOCK_ATTENTION,
    BulkDropout,
    cpu_training_kernels,
    fused_lora_forward,
    fused_rms_norm_forward,
    keep_mask,
)
from palr.plugins.llama_lora.model import wrap_lora

from palr_core.pipeline import seed_stage

from .test_llama_lora import SMALL


def _llama(seed: int = 0):
    """A small grouped-query LLaMA (4 query heads share 2 key/value heads), float32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=200, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    return LlamaForCausalLM(config)


def _loss_and_grads(model, ids, mask, attention: str):
    model.set_attn_implementation(attention)
    model.zero_grad()
    logits = model(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    loss = logits[real].logsumexp(-1).mean()  # reads every real position
    loss.backward()
    return logits[real].detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("padding", [None, "right", "left"])
def test_block_attention_gives_sdpa_logits_and_gradients(padding):
    """Over three query blocks (300 tokens), without padding (no mask: causal) and with padding
    ending or starting inside a block (a boolean mask): the same logits at every real position and
    the same weight gradients as transformers' SDPA attention."""
    model = _llama()
    ids = torch.randint(0, 200, (2, 300), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    if padding == "right":
        mask[1, 170:] = 0
    elif padding == "left":  # real tokens after the pads must not see them
        mask[1, :170] = 0
    expected, expected_grads = _loss_and_grads(model, ids, mask, "sdpa")
    logits, grads = _loss_and_grads(model, ids, mask, BLOCK_ATTENTION)
    torch.testing.assert_close(logits, expected, atol=2e-5, rtol=1e-4)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], atol=1e-5, rtol=1e-3, msg=name)


def test_block_attention_hands_cached_generation_to_sdpa():
    """Generation with a KV cache (one query against many keys) is left to SDPA: same tokens."""
    model = _llama().eval()
    ids = torch.randint(0, 200, (1, 40), generator=torch.Generator().manual_seed(2))
    outputs = {}
    for attention in ("sdpa", BLOCK_ATTENTION):
        model.set_attn_implementation(attention)
        outputs[attention] = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(outputs["sdpa"], outputs[BLOCK_ATTENTION])


def test_bulk_dropout_drops_p_of_the_elements_scales_the_rest_and_follows_the_seed():
    x = torch.randn(400, 500)
    dropout = BulkDropout(0.05).train()
    torch.manual_seed(3)
    y = dropout(x)
    dropped = (y == 0).float().mean().item()
    # 200,000 draws: the share dropped is within 5 standard deviations (0.0024) of p
    assert abs(dropped - 0.05) < 5 * (0.05 * 0.95 / x.numel()) ** 0.5
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.95)
    torch.manual_seed(3)
    assert torch.equal(dropout(x), y)  # the global generator decides the mask
    assert not torch.equal(dropout(x), y)
    x.requires_grad_(True)
    torch.manual_seed(3)
    dropout(x).sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.95)  # gradient: the same mask and scale
    assert dropout.eval()(x) is x and BulkDropout(0.0).train()(x) is x


def test_training_kernels_swap_in_for_the_block_and_are_restored_after():
    """Inside the block: the block attention, bulk dropout on every adapted projection and the fused
    forwards of the LoRA projections and the frozen RMS norms; after, the model's own attention,
    peft's dropout modules (in the train/eval mode they had) and the classes' own forwards."""
    from peft.tuners.lora import Linear
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    model = wrap_lora(_llama(), LoraSettings(dropout=0.1), False).train()
    base = model.get_base_model()
    before = base.config._attn_implementation
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.p == 0.1]
    projections = [m for m in model.modules() if isinstance(m, Linear)]
    norms = [m for m in model.modules() if isinstance(m, LlamaRMSNorm)]
    assert dropouts and len(projections) == 8 and len(norms) == 5
    with cpu_training_kernels(model):
        assert base.config._attn_implementation == BLOCK_ATTENTION
        bulk = [m for m in model.modules() if isinstance(m, BulkDropout)]
        assert len(bulk) == len(dropouts) and all(m.training and m.p == 0.1 for m in bulk)
        assert not any(isinstance(m, torch.nn.Dropout) and m.p == 0.1 for m in model.modules())
        assert all(m.forward.func is fused_lora_forward for m in projections)
        assert all(m.forward.func is fused_rms_norm_forward for m in norms)
        model.eval()
    assert base.config._attn_implementation == before
    restored = [m for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.p == 0.1]
    assert restored == dropouts and not any(m.training for m in restored)
    assert not any(isinstance(m, BulkDropout) for m in model.modules())
    assert not any("forward" in vars(m) for m in model.modules())


def _projection(dtype: torch.dtype, dropout: float, **lora):
    """An adapted q_proj of a small LLaMA in ``dtype`` (peft keeps the adapter in float32) with a
    non-zero ``lora_B``, so that every gradient is non-zero."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["q_proj"], **lora)
    model = get_peft_model(_llama().to(dtype), config).train()
    layer = model.get_base_model().model.layers[0].self_attn.q_proj
    torch.nn.init.normal_(layer.lora_B["default"].weight, std=0.5)
    return layer


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("p", [0.0, 0.1])
def test_fused_lora_projection_computes_peft_s_lora_and_its_gradients(dtype, p):
    """``base(x) + scaling * B A dropout(x)``, with the mask :func:`keep_mask` draws from the seeded
    generator: the output and the gradients of ``x``, ``A`` and ``B`` against float64 (bf16: to bf16
    rounding); without dropout also against peft's own forward."""
    layer = _projection(dtype, p)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    x = torch.randn(3, 5, 32, generator=torch.Generator().manual_seed(1)).to(dtype).requires_grad_(True)
    grad = torch.randn(3, 5, 32, generator=torch.Generator().manual_seed(2)).to(dtype)
    torch.manual_seed(7)
    out = fused_lora_forward(layer, x)
    out.backward(grad)
    torch.manual_seed(7)
    keep = keep_mask(x, p).double() if p else torch.ones(x.shape, dtype=torch.float64)
    assert not p or 0 < (keep == 0).sum() < keep.numel() / 3
    x64, a64, b64 = (t.detach().double().requires_grad_(True) for t in (x, a, b))
    expected = (x64 @ layer.base_layer.weight.double().T
                + ((x64 * keep / (1 - p)) @ a64.T) @ b64.T * layer.scaling["default"])
    expected.backward(grad.double())

    def close(got, want):
        if dtype == torch.float32:
            torch.testing.assert_close(got.double(), want.detach().double(), atol=1e-5, rtol=1e-5)
        else:  # bf16 keeps 8 bits: relative to the whole tensor (sums of mixed signs lose more per element)
            assert (got.double() - want.detach().double()).norm() / want.detach().double().norm() < 1e-2

    assert out.dtype == dtype and a.grad.dtype == b.grad.dtype == torch.float32
    for got, want in ((out, expected), (x.grad, x64.grad), (a.grad, a64.grad), (b.grad, b64.grad)):
        close(got, want)
    if p == 0:
        close(out, type(layer).forward(layer, x))


@pytest.mark.parametrize("case", ["merged", "disabled", "dora", "autocast"])
def test_fused_lora_projection_leaves_other_adapters_to_peft(case):
    """A merged or disabled adapter, LoRA variants (DoRA) and autocast run peft's own forward,
    which projects through the base layer once."""
    layer = _projection(torch.float32, 0.0, use_dora=case == "dora")
    if case == "merged":
        layer.merge()
    elif case == "disabled":
        layer.enable_adapters(False)
    x = torch.randn(2, 4, 32)
    calls = []
    layer.base_layer.register_forward_hook(lambda *_: calls.append(1))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "autocast"):
        got = fused_lora_forward(layer, x)
        assert len(calls) == 1
        assert torch.equal(got, type(layer).forward(layer, x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_rms_norm_gives_llama_s_norm_and_its_gradient(dtype):
    """The same output as transformers' LlamaRMSNorm, bit for bit, and the same input gradient (to
    float32 rounding; in bf16 as close to float64 as autograd's)."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    norm = LlamaRMSNorm(48, eps=1e-6).requires_grad_(False)
    norm.weight.copy_(torch.rand(48, generator=torch.Generator().manual_seed(0)) + 0.5)
    norm.to(dtype)
    x = (3 * torch.randn(4, 6, 48, generator=torch.Generator().manual_seed(1))).to(dtype)
    grad = torch.randn(4, 6, 48, generator=torch.Generator().manual_seed(2)).to(dtype)
    grads = {}
    for name, forward in (("transformers", norm), ("fused", lambda h: fused_rms_norm_forward(norm, h))):
        h = x.clone().requires_grad_(True)
        out = forward(h)
        out.backward(grad)
        grads[name] = (out, h.grad)
    assert torch.equal(grads["fused"][0], grads["transformers"][0])
    wide = x.double().requires_grad_(True)
    exact = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight.double()
    exact.backward(grad.double())
    if dtype == torch.float32:
        torch.testing.assert_close(grads["fused"][1], grads["transformers"][1], atol=1e-5, rtol=1e-5)
    else:
        error = {name: (g.double() - wide.grad).norm() / wide.grad.norm() for name, (_, g) in grads.items()}
        assert error["fused"] <= 1.2 * error["transformers"] and error["fused"] < 1e-2, error


def test_fine_tuning_on_cpu_records_its_attention_and_trains_as_sdpa_does(registry, run_context, training_data):
    """``cpu_kernels`` (default on) trains with the block attention, says so in ``fit_state`` and
    leaves ranking with the model's own attention. Without dropout (whose masks come from other
    draws), the adapter it trains is the one SDPA attention trains, to rounding."""
    fits = {}
    for on in (True, False):
        ranker = registry.build("ranker", "llama_lora", {**SMALL, "cpu_kernels": on, "lora": {"dropout": 0.0}})
        seed_stage(run_context.seed, "fit_ranker")
        ranker.fit(training_data, replace(run_context, work_dir=run_context.work_dir / str(on)))
        fits[on] = ranker
    assert fits[True].fit_state["attention"] == BLOCK_ATTENTION
    assert fits[False].fit_state["attention"] == "sdpa"
    assert fits[True].model.config._attn_implementation == "sdpa"
    other = dict(fits[False].model.named_parameters())
    trained = [(n, p) for n, p in fits[True].model.named_parameters() if p.requires_grad]
    assert trained
    for name, parameter in trained:
        torch.testing.assert_close(parameter, other[name], atol=1e-4, rtol=1e-3, msg=name)


def test_fine_tuning_returns_memory_to_the_system_only_over_its_budget(monkeypatch):
    """Trimming the heap after every micro-batch made the next one fault all its memory in again;
    on a CPU the fine-tuner trims only when the process holds more than the budget."""
    import palr.plugins.llama_lora.training as training

    released = []
    monkeypatch.setattr(training, "release_memory", lambda: released.append(True))
    tuner = training.LoraFineTuner(torch.nn.Linear(2, 2), 1e-3, release_above=4e9)
    for held in (3.9e9, 4.1e9, 3.0e9):
        monkeypatch.setattr(training, "resident_memory", lambda held=held: int(held))
        tuner.on_train_batch_end(None, None, 0)
    assert released == [True]  # only at 4.1 GB
    every = training.LoraFineTuner(torch.nn.Linear(2, 2), 1e-3)  # no budget (a GPU): after each one
    every.on_train_batch_end(None, None, 0)
    assert released == [True, True]


def test_fine_tuning_on_cpu_keeps_freed_memory_for_its_steps_only(monkeypatch, registry, run_context, training_data):
    """On a CPU (a budget) a real fine-tuning tells glibc to keep what a step frees, and to stop
    when it ends: kept for the rest of the process, it let the first ranking batch start on top of
    what fine-tuning had freed. On a GPU (no budget) it does neither."""
    import palr.plugins.llama_lora.training as training

    calls = []
    monkeypatch.setattr(training, "keep_freed_memory", lambda keep=True: calls.append(keep))
    ranker = registry.build("ranker", "llama_lora", SMALL)
    seed_stage(run_context.seed, "fit_ranker")
    ranker.fit(training_data, run_context)
    assert calls == [True, False]
    calls.clear()
    gpu = training.LoraFineTuner(torch.nn.Linear(2, 2), 1e-3)
    gpu.setup("fit")
    gpu.teardown("fit")
    assert calls == []


def test_going_back_from_kept_memory_restores_glibc_s_trim_and_trims(monkeypatch):
    from palr.plugins.llama_lora import memory as llm

    class Libc:
        def __init__(self):
            self.calls = []

        def mallopt(self, parameter, value):
            self.calls.append((parameter, value))

        def malloc_trim(self, pad):
            self.calls.append(("trim", pad))

    libc = Libc()
    monkeypatch.setattr(llm, "_glibc", lambda: libc)
    llm.keep_freed_memory()
    assert dict(libc.calls) == {-1: 2**31 - 1, -2: 64 * 2**20, -3: 32 * 2**20}
    libc.calls.clear()
    llm.keep_freed_memory(False)
    assert libc.calls[-1] == ("trim", 0)  # what was kept goes back now, not at the next free
    assert dict(libc.calls[:-1]) == {-1: 128 * 1024, -2: 128 * 1024, -3: 32 * 2**20}  # glibc's defaults


@pytest.mark.parametrize("decoder", ["score", "verbalizer"])
def test_ranking_on_cpu_reads_the_block_attention_and_scores_as_sdpa_does(registry, run_context, small_split,
                                                                           decoder):
    """The packed ``score`` decoder's 4-D float mask and the verbalizer's left padding give the same
    candidate scores under the block attention as under SDPA (float32 tiny model)."""
    from .test_llama_lora import _requests

    requests = _requests(small_split, range(5))
    scores = {}
    for on in (True, False):
        ranker = registry.build("ranker", "llama_lora", {**SMALL, "decoder": decoder, "cpu_kernels": on})
        seed_stage(run_context.seed, "fit_ranker")  # the same random base and adapter both times
        ranker.setup(replace(run_context, work_dir=run_context.work_dir / str(on)))
        scores[on] = ranker.candidate_scores(requests, run_context)
        assert ranker.model.config._attn_implementation == (BLOCK_ATTENTION if on else "sdpa")
    for blocks, sdpa in zip(scores[True], scores[False]):
        np.testing.assert_allclose(blocks, sdpa, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("option", "values"), [("cpu_kernels", (True, False)), ("pad_to_multiple_of", (32, 1))])
def test_the_kernels_leave_the_fine_tuning_fingerprint_alone(registry, run_context, training_data, option, values):
    """``cpu_kernels`` and the padding say how, not what: folders fine-tuned before they existed,
    or with other values, still resume and load (as with ``trainer.threads``)."""
    prints = [registry.build("ranker", "llama_lora", {**SMALL, option: value})._fingerprint(training_data, run_context)
              for value in values]
    assert prints[0] == prints[1] and option not in prints[0]["config"]
