"""The llama_lora ranker: trie-grounded generation, the score decoder, adapters, resume, learning."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from palr_llama_lora.decoding import CandidateTrie, _block_scores, generate_rankings

from palr_core import RankRequest, complete_ranking, metrics_from_ranks, rank_from_lists
from palr_core.pipeline import seed_stage

SMALL = {
    "tiny": {"hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64, "vocab_size": 600},
    "instructions": {"max_history": 5, "max_targets": 3, "num_negatives": 3},
    "epochs": 1, "batch_size": 8, "rank_batch_size": 8, "num_generate": 4,
}


def _ranker(registry, **overrides):
    return registry.build("ranker", "llama_lora", {**SMALL, **overrides})


def _requests(split, users, k=8):
    histories = split.histories("test")
    rng = np.random.default_rng(0)
    return [RankRequest(user=u, history=histories[u],
                        candidates=rng.choice(np.setdiff1d(np.arange(split.num_items), histories[u]), k, replace=False))
            for u in users]


def _prompts(ranker, requests, context, task="retrieval"):
    from palr_core.kit.prompts import build_prompt

    return [ranker.coder.prompt(build_prompt(ranker.config.templates, task, context.catalog, r.history[-5:],
                                             r.candidates if task == "retrieval" else None, n=4), 512)
            for r in requests]


def test_untrained_generation_writes_only_distinct_candidates(registry, run_context, small_split):
    ranker = _ranker(registry, decoder="generate")
    ranker.setup(run_context)
    requests = _requests(small_split, range(6))
    outputs = generate_rankings(ranker.model, ranker.coder, _prompts(ranker, requests, run_context),
                                [r.candidates for r in requests], limit=4)
    for out, request in zip(outputs, requests):
        assert len(out) == 4 and len(set(out)) == 4
        assert set(out) <= set(request.candidates.tolist())


def test_v1_generation_draws_from_the_catalogue_minus_history(registry, run_context, small_split):
    ranker = _ranker(registry, task="v1", decoder="generate")
    ranker.setup(run_context)
    requests = _requests(small_split, range(4))
    pools = [ranker._pool(r, run_context) for r in requests]
    outputs = generate_rankings(ranker.model, ranker.coder, _prompts(ranker, requests, run_context, "recommend"),
                                pools, limit=4)
    for out, request in zip(outputs, requests):
        assert len(set(out)) == 4 and not set(out) & set(request.history.tolist())


def test_trie_allows_only_continuations_of_unwritten_candidates(registry, run_context):
    ranker = _ranker(registry)
    ranker.setup(run_context)
    coder = ranker.coder
    trie = CandidateTrie(coder, [3, 4], coder.tokenizer.eos_token_id, limit=2)
    first = list(coder.block(3))
    assert set(trie.allowed([])) == {coder.block(3)[0], coder.block(4)[0]}
    assert trie.allowed(first) == [coder.block(4)[0]]  # item 3 was written: no repeat
    assert trie.allowed(first + list(coder.block(4))) == [coder.tokenizer.eos_token_id]


@pytest.mark.parametrize("decoder", ["score", "generate"])
def test_rank_returns_a_full_ordering_of_the_candidates(registry, run_context, small_split, decoder):
    ranker = _ranker(registry, decoder=decoder)
    ranker.setup(run_context)
    requests = _requests(small_split, range(5))
    for ranked, request in zip(ranker.rank(requests, run_context), requests):
        assert sorted(ranked) == sorted(request.candidates.tolist())


def test_cached_scoring_equals_full_sequence_likelihood(registry, run_context):
    ranker = _ranker(registry)
    ranker.setup(run_context)
    model, prompt = ranker.model.eval(), list(range(5, 30))
    blocks = [list(ranker.coder.block(i)) for i in (0, 1, 2)]
    with torch.no_grad():
        first = model(input_ids=torch.tensor([prompt]), use_cache=True)
        cached = _block_scores(model, first.past_key_values, first.logits[0, -1].log_softmax(-1),
                               len(prompt), blocks, ranker.coder.tokenizer.pad_token_id)
        full = []
        for block in blocks:
            logp = model(input_ids=torch.tensor([prompt + block])).logits[0].log_softmax(-1)
            full.append(np.mean([logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(block)]))
    np.testing.assert_allclose(cached, full, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_saved_adapter_reloads_to_identical_rankings(registry, run_context, training_data, small_split):
    ranker = _ranker(registry)
    ranker.fit(training_data, run_context)
    out = run_context.work_dir / "llama_lora"
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    # the adapter names its base model, in peft's config and in its model card
    base = str((out / "base").resolve())
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == base
    card = (out / "adapter" / "README.md").read_text()
    assert card.startswith(f'---\nbase_model: "{base}"\n') and "# PALR ranker adapter (v2)" in card
    assert "More Information Needed" not in card
    requests = _requests(small_split, range(6))
    reloaded = _ranker(registry, adapter=str(out))
    reloaded.fit(training_data, run_context)
    assert reloaded.rank(requests, run_context) == ranker.rank(requests, run_context)


@pytest.mark.slow
def _fit(ranker, data, context):
    seed_stage(context.seed, "fit_ranker")  # as the pipeline does before the stage
    ranker.fit(data, context)
    return ranker


@pytest.mark.parametrize("past", [1, 3])  # 1: the last checkpoint ends an epoch; 3: it is mid-epoch
def test_an_interrupted_fine_tuning_resumes_to_the_uninterrupted_result(registry, run_context, training_data,
                                                                          small_split, monkeypatch, past):
    from palr_llama_lora.training import LoraFineTuner

    params = {"epochs": 2, "checkpoint_every_n_steps": 2}
    whole = _fit(_ranker(registry, **params), training_data, run_context)
    steps = whole.fit_state["global_step"]
    crashed = replace(run_context, work_dir=run_context.work_dir / "crashed")
    step = LoraFineTuner.training_step

    def crash_mid_epoch_2(self, batch, batch_idx):
        if self.global_step == steps // 2 + past:  # in the second epoch, a step past a checkpoint
            raise RuntimeError("simulated interruption")
        return step(self, batch, batch_idx)

    monkeypatch.setattr(LoraFineTuner, "training_step", crash_mid_epoch_2)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        _fit(_ranker(registry, **params), training_data, crashed)
    monkeypatch.undo()
    last = crashed.work_dir / "llama_lora" / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)["state_dict"]
    assert state and all("lora_" in k or "modules_to_save" in k for k in state)  # adapter only
    resumed = _fit(_ranker(registry, **params), training_data, crashed)
    assert resumed.fit_state["resumed_from"] == str(last) and resumed.fit_state["global_step"] == steps
    trained = {n: p for n, p in whole.model.named_parameters() if p.requires_grad}
    for name, parameter in resumed.model.named_parameters():
        if parameter.requires_grad:
            assert torch.equal(parameter, trained[name]), name
    requests = _requests(small_split, range(6))
    assert resumed.rank(requests, crashed) == whole.rank(requests, run_context)


def test_a_finished_fine_tuning_is_loaded_not_run_again(registry, run_context, training_data, small_split):
    first = _fit(_ranker(registry), training_data, run_context)
    again = _fit(_ranker(registry), training_data, run_context)
    assert again.fit_state == {**first.fit_state}  # read back from done.json, no new steps
    requests = _requests(small_split, range(4))
    assert again.rank(requests, run_context) == first.rank(requests, run_context)


@pytest.mark.slow
def test_fine_tuned_ranker_beats_the_identity_ranker(registry, run_context, training_data, small_split):
    """Ten shuffled candidates (the test item and nine others): identity order knows nothing, but
    next films are often sequels ("The X II" after "The X"), which a model reading titles learns."""
    histories, targets = small_split.histories("test")[:80], small_split.test[:80]
    rng = np.random.default_rng(0)
    candidates = []
    for history, target in zip(histories, targets):
        others = np.setdiff1d(np.arange(small_split.num_items), np.append(history, target))
        candidates.append(rng.permutation(np.append(rng.choice(others, 9, replace=False), target)))
    requests = [RankRequest(user=u, history=h, candidates=c) for u, (h, c) in enumerate(zip(histories, candidates))]
    ranker = registry.build("ranker", "llama_lora", LEARNING)
    ranker.fit(training_data, run_context)
    ranked = [complete_ranking(r, c) for r, c in zip(ranker.rank(requests, run_context), candidates)]
    identity = metrics_from_ranks(rank_from_lists([c.tolist() for c in candidates], targets), [5])
    palr = metrics_from_ranks(rank_from_lists(ranked, targets), [5])
    assert palr["NDCG@5"] > identity["NDCG@5"] + 0.05, (palr, identity)


LEARNING = {
    "task": "v1",
    "tiny": {"hidden_size": 64, "layers": 2, "heads": 4, "intermediate_size": 128, "vocab_size": 800},
    "instructions": {"max_history": 5, "max_targets": 1, "user_fraction": 1.0, "examples_per_user": 3,
                     "swap_prob": 0.0},
    "epochs": 2, "batch_size": 32, "learning_rate": 3e-3, "warmup_steps": 5,
    "retriever_weight": 0.0,  # the model alone: these candidates come in random order, not a retriever's
}


def test_retriever_fusion_interpolates_between_model_and_retriever_order():
    from palr_llama_lora.decoding import fuse_with_retriever

    model_scores = [-3.0, -1.0, -2.0, -0.5]  # the model prefers the last candidate, then the second
    assert fuse_with_retriever(model_scores, 0.0) == model_scores
    strong = fuse_with_retriever(model_scores, 100.0)
    assert sorted(range(4), key=lambda k: -strong[k]) == [0, 1, 2, 3]  # retriever order kept
    mild = fuse_with_retriever(model_scores, 1.0)
    assert sorted(range(4), key=lambda k: -mild[k]) == [1, 3, 0, 2]
