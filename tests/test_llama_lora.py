"""The llama_lora ranker: trie-grounded generation, the score decoder, adapters, resume, learning."""

import dataclasses
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from palr.plugins.llama_lora.decoding import CandidateTrie, generate_rankings, packed_block_scores

from palr_core import RankRequest, complete_ranking, metrics_from_ranks, rank_from_lists
from palr_core.pipeline import seed_stage

SMALL = {
    "tiny": {"hidden_size": 32, "layers": 1, "heads": 2, "intermediate_size": 64, "vocab_size": 600},
    "instructions": {"max_history": 5, "max_targets": 3, "num_negatives": 3},
    "epochs": 1, "batch_size": 8, "rank_batch_size": 8, "num_generate": 4, "retriever_weight": 2.0,
}


def _ranker(registry, **overrides):
    return registry.build("ranker", "llama_lora", {**SMALL, **overrides})


def _batches(ranker, data, context):
    """The fine-tuning examples of the ranker's decoder, as ``fit`` builds them."""
    return ranker.decoder.training_batches(data, ranker.inputs(context))


def _micro_batch(ranker, batches, context):
    from palr.plugins.llama_lora.memory import choose_micro_batch

    return choose_micro_batch(ranker.model, batches, ranker.config, on_gpu=False)


def _requests(split, users, k=8):
    histories = split.histories("test")
    rng = np.random.default_rng(0)
    return [RankRequest(user=u, history=histories[u],
                        candidates=rng.choice(np.setdiff1d(np.arange(split.num_items), histories[u]), k, replace=False))
            for u in users]


def _prompts(ranker, requests, context, task="retrieval"):
    from palr.plugins.llama_lora.prompts import build_prompt

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
    from palr.plugins.llama_lora.decoders.generate import candidate_pool

    pools = [candidate_pool(r, ranker.inputs(run_context)) for r in requests]
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


def test_packed_scoring_equals_each_blocks_full_sequence_likelihood(registry, run_context, monkeypatch):
    """Two users of different prompt lengths in one forward pass, each with its own blocks: every
    block's score is what the model gives it written right after its own prompt, alone (the LM
    head read in chunks of 3 positions, so chunk edges are crossed)."""
    monkeypatch.setattr("palr.plugins.llama_lora.decoding.READ_CHUNK", 3)
    ranker = _ranker(registry)
    ranker.setup(run_context)
    model = ranker.model.eval()
    prompts = [list(range(5, 30)), list(range(40, 48))]
    blocks = [[list(ranker.coder.block(i)) for i in (0, 1, 2)], [list(ranker.coder.block(i)) for i in (3, 4)]]
    with torch.no_grad():
        packed = packed_block_scores(model, prompts, blocks, ranker.coder.tokenizer.pad_token_id)
        for prompt, user_blocks, scores in zip(prompts, blocks, packed):
            full = []
            for block in user_blocks:
                logp = model(input_ids=torch.tensor([prompt + block])).logits[0].log_softmax(-1)
                full.append(np.mean([logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(block)]))
            np.testing.assert_allclose(scores, full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chunk", [128, 5])
def test_answer_loss_equals_the_full_vocabulary_loss(registry, run_context, training_data, monkeypatch, chunk):
    """The LM head on answer positions only, in one chunk or several, gives the loss transformers
    computes over every position."""
    import palr.plugins.llama_lora.training as training
    from palr.plugins.llama_lora.training import answer_loss

    monkeypatch.setattr(training, "HEAD_CHUNK", chunk)
    ranker = _ranker(registry)
    ranker.setup(run_context)
    batches = _batches(ranker, training_data, run_context)
    batch = batches.collate(batches.examples[:4])
    with torch.no_grad():
        torch.testing.assert_close(answer_loss(ranker.model, **batch), ranker.model(**batch).loss)


def test_right_padded_batches_train_with_causal_attention_alone(registry, run_context, training_data):
    """Real tokens followed by padding need no padding mask: the batch's real positions get the
    hidden states the mask gives them. Left padding, or a gap, keeps the mask."""
    from palr.plugins.llama_lora.training import causal_mask_only

    ranker = _ranker(registry)
    ranker.setup(run_context)
    batches = _batches(ranker, training_data, run_context)
    batch = batches.collate(sorted(batches.examples, key=lambda e: len(e["input_ids"]))[::7][:4])
    mask = batch["attention_mask"]
    assert (mask == 0).any() and causal_mask_only(mask) is None
    with torch.no_grad():
        masked = ranker.model(input_ids=batch["input_ids"], attention_mask=mask).logits
        causal = ranker.model(input_ids=batch["input_ids"]).logits
    real = mask.bool()
    torch.testing.assert_close(causal[real], masked[real])
    assert not torch.equal(causal[~real], masked[~real])  # only the padding's own outputs change
    left = mask.flip(1)
    assert causal_mask_only(left) is left
    gap = torch.ones_like(mask)
    gap[0, 3] = 0
    assert causal_mask_only(gap) is gap


@pytest.mark.parametrize("decoder", ["score", "verbalizer"])
def test_micro_batches_padded_to_a_multiple_keep_their_loss(registry, run_context, training_data, decoder):
    """``pad_to_multiple_of`` rounds every micro-batch's width up (fewer distinct shapes for the
    CPU's kernel caches to compile and keep); the padding comes after the real tokens and out of
    the loss, so each micro-batch's loss is the unpadded one."""
    from palr.plugins.llama_lora.training import answer_loss, choice_loss

    ranker = _ranker(registry, decoder=decoder, choices=5, lora={"dropout": 0.0}, pad_to_multiple_of=1)
    ranker.setup(run_context)
    plain = _batches(ranker, training_data, run_context)
    ranker.config = replace(ranker.config, pad_to_multiple_of=16)
    padded = _batches(ranker, training_data, run_context)
    loss = choice_loss if decoder == "verbalizer" else answer_loss
    groups = [[e] for e in plain.examples[:3]] + [plain.examples[3:6]]
    widths = set()
    with torch.no_grad():
        for rows in groups:
            batch, wide = plain.collate(rows), padded.collate(rows)
            assert wide["input_ids"].shape[1] % 16 == 0
            assert (wide["attention_mask"].sum(1) == batch["attention_mask"].sum(1)).all()
            widths.add((batch["input_ids"].shape[1], wide["input_ids"].shape[1]))
            torch.testing.assert_close(loss(ranker.model, **wide), loss(ranker.model, **batch), rtol=1e-4, atol=1e-5)
    assert len(widths) > 1 and any(wide > width for width, wide in widths)


def test_ranking_reads_a_bf16_base_with_its_adapter_in_bf16_and_close_to_float32():
    """A 16-bit base ranks with its adapter cast to the same dtype (no float32 copy per projection);
    the scores stay within bf16 rounding of the float32 adapter's, and a float32 base is left alone."""
    from palr.plugins.llama_lora.config import LoraSettings
    from palr.plugins.llama_lora.model import adapters_in_base_dtype, wrap_lora
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    ids = torch.randint(0, 300, (2, 12))
    for dtype in (torch.float32, torch.bfloat16):
        model = wrap_lora(LlamaForCausalLM(config).to(dtype), LoraSettings(), False).eval()
        for name, parameter in model.named_parameters():
            if "lora_B" in name:  # a trained adapter: peft starts B at zero
                torch.nn.init.normal_(parameter, std=0.2)
        lora = [p for n, p in model.named_parameters() if "lora_" in n]
        assert {p.dtype for p in lora} == {torch.float32}
        with torch.no_grad():
            before = model(input_ids=ids).logits.float()
            adapters_in_base_dtype(model)
            after = model(input_ids=ids).logits.float()
        assert {p.dtype for p in lora} == {dtype}
        if dtype == torch.float32:
            assert torch.equal(before, after)
        else:
            torch.testing.assert_close(after, before, atol=0.1, rtol=0.05)
            assert not torch.equal(before, after)  # the cast took effect


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
    from palr.plugins.llama_lora.training import LoraFineTuner

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
    # one epoch learns it: NDCG@5 0.50 against identity's 0.25 (two epochs: 0.51), at half the time
    ranker = registry.build("ranker", "llama_lora", {**LEARNING, "epochs": 1})
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
    from palr.plugins.llama_lora.decoding import fuse_with_retriever

    model_scores = [-3.0, -1.0, -2.0, -0.5]  # the model prefers the last candidate, then the second
    assert fuse_with_retriever(model_scores, 0.0) == model_scores
    strong = fuse_with_retriever(model_scores, 100.0)
    assert sorted(range(4), key=lambda k: -strong[k]) == [0, 1, 2, 3]  # retriever order kept
    mild = fuse_with_retriever(model_scores, 1.0)
    assert sorted(range(4), key=lambda k: -mild[k]) == [1, 3, 0, 2]


def test_choice_loss_is_cross_entropy_over_the_candidates_labels(registry, run_context, training_data):
    from palr.plugins.llama_lora.training import choice_loss

    ranker = _ranker(registry, decoder="verbalizer", choices=5)
    ranker.setup(run_context)
    batches = _batches(ranker, training_data, run_context)
    rows = batches.examples[:3]
    batch = batches.collate(rows)
    with torch.no_grad():
        loss = choice_loss(ranker.model, **batch)
        expected = []
        for row in rows:  # each prompt alone, unpadded: the label's share of the softmax over the labels
            logits = ranker.model(input_ids=torch.tensor([row["input_ids"]])).logits[0, -1]
            expected.append(-logits[row["choices"]].log_softmax(-1)[row["answer"]])
    torch.testing.assert_close(loss, torch.stack(expected).mean(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("decoder", ["score", "verbalizer"])
def test_batched_ranking_equals_ranking_one_user_at_a_time(registry, run_context, small_split, decoder):
    """Users of different prompt lengths share a forward pass (padded, sorted by length): each one's
    scores are those it gets alone, and so are they with every batch padded to a multiple of 16."""
    ranker = _ranker(registry, decoder=decoder, choices=6, pad_to_multiple_of=1)
    ranker.setup(run_context)
    requests = _requests(small_split, range(7), k=8)
    together = ranker.candidate_scores(requests, run_context)
    ranker.config.pad_to_multiple_of = 16
    widths = []
    embed = ranker.model.get_base_model().get_input_embeddings()
    hook = embed.register_forward_pre_hook(lambda module, args: widths.append(args[0].shape[1]))
    padded = ranker.candidate_scores(requests, run_context)
    hook.remove()
    assert widths and all(w % 16 == 0 for w in widths)
    ranker.config.pad_to_multiple_of, ranker.config.rank_batch_size = 1, 1
    alone = ranker.candidate_scores(requests, run_context)
    np.testing.assert_allclose(np.array(together), np.array(alone), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.array(padded), np.array(alone), rtol=1e-4, atol=1e-5)
    assert len(together[0]) == (6 if decoder == "verbalizer" else 8)  # the verbalizer shows the top `choices`


@pytest.mark.slow
def test_fine_tuned_verbalizer_learns_the_sequel_habit(registry, run_context, training_data, small_split):
    """Users whose test item is a sequel of a film in their history ("The X II" after "The X"),
    among nine random others in random order: the fine-tuned verbalizer picks the sequel's label
    more often than the identity order (chance)."""
    import re

    catalog = run_context.catalog

    def series(item):
        return re.sub(r"( I+)? \(\d{4}\)$", "", catalog.render(int(item)))

    histories, tests = small_split.histories("test"), small_split.test
    users = [u for u in range(len(tests)) if re.search(r" I+ \(\d{4}\)$", catalog.render(int(tests[u])))
             and series(tests[u]) in {series(i) for i in histories[u]}]
    rng = np.random.default_rng(0)
    candidates = [rng.permutation(np.append(rng.choice(np.setdiff1d(np.arange(small_split.num_items),
                                                                    np.append(histories[u], tests[u])), 9,
                                                       replace=False), tests[u])) for u in users]
    requests = [RankRequest(user=u, history=histories[u], candidates=c) for u, c in zip(users, candidates)]
    ranker = _fit(registry.build("ranker", "llama_lora", {**LEARNING, "task": "v2", "decoder": "verbalizer",
                                                          "choices": 10, "epochs": 3}), training_data, run_context)
    targets = tests[users]
    palr = metrics_from_ranks(rank_from_lists(ranker.rank(requests, run_context), targets), [5])
    identity = metrics_from_ranks(rank_from_lists([c.tolist() for c in candidates], targets), [5])
    assert len(users) >= 40
    assert palr["NDCG@5"] > identity["NDCG@5"] + 0.05, (palr, identity)


def test_auto_fusion_is_chosen_on_validation_items_never_on_test_items(registry, run_context, training_data,
                                                                        small_split, monkeypatch):
    """The pipeline's tune stage hands the ranker training prefixes and validation items; the weight
    it chooses does not move when every test item is changed."""
    from palr.plugins.llama_lora.ranker import LlamaLoraRanker

    from palr_core import PalrConfig
    from palr_core.pipeline import Components, tune_ranker

    seen = {}
    tune = LlamaLoraRanker.tune

    def spy(self, requests, targets, context):
        seen["requests"], seen["targets"] = requests, targets
        return tune(self, requests, targets, context)

    monkeypatch.setattr(LlamaLoraRanker, "tune", spy)
    ranker = _ranker(registry, retriever_weight="auto", retriever_weights=[0.0, 1.0, 1000.0])
    ranker.setup(run_context)
    retriever = registry.build("retriever", "popularity", {})
    retriever.fit(training_data, run_context)
    parts = Components(dataset=None, retriever=retriever, profile=registry.build("profile", "none", {}),
                       ranker=ranker, names={})
    config = PalrConfig()
    config.eval.tune_users, config.eval.candidates, config.eval.ks = 40, 10, [5, 10]
    chosen = tune_ranker(parts, small_split, config, run_context)
    for request, target in zip(seen["requests"], seen["targets"]):
        assert request.history.tolist() == small_split.train[request.user].tolist()  # no validation, no test item
        assert target == small_split.valid[request.user]
    assert set(chosen["NDCG@10 by retriever_weight"]) == {"0", "1", "1000"}
    assert chosen["retriever_weight"] == (ranker.weight if ranker.weight < float("inf") else "retriever order")
    scrambled = dataclasses.replace(small_split, test=np.roll(small_split.test, 1))
    assert tune_ranker(parts, scrambled, config, run_context) == chosen


def test_micro_batches_shrink_to_the_memory_budget_and_an_impossible_fit_stops_first(
        registry, run_context, training_data, monkeypatch):
    import palr.plugins.llama_lora.memory as module

    ranker = _ranker(registry, batch_size=8)
    ranker.setup(run_context)
    batches = _batches(ranker, training_data, run_context)
    micro, whole, _ = _micro_batch(ranker, batches, run_context)
    assert micro == 8  # the tiny model fits the default 4 GB with the whole batch
    ranker.config.max_memory_gb = (whole - 1) / 1e9  # one byte short of the whole batch
    assert _micro_batch(ranker, batches, run_context)[0] == 4
    monkeypatch.setattr(module, "available_memory", lambda device="cpu": 10**6)  # 1 MB free
    # and a process that holds nothing yet: a test worker's memory from earlier tests would count
    # as already held and cover the estimate
    monkeypatch.setattr(module, "resident_memory", lambda: 0)
    with pytest.raises(ValueError, match=r"fine-tuning needs about .* GB at micro-batches of 1 .* lower ranker\.max_length"):
        _micro_batch(ranker, batches, run_context)


def _tuned(registry, run_context, small_split, monkeypatch, model_scores, **overrides):
    """A ranker whose model scores each request's candidates by ``model_scores(request, target)``,
    tuned by ``auto`` on 60 users whose targets sit at retriever rank 3 (of 8)."""
    ranker = _ranker(registry, retriever_weight="auto", **overrides)
    ranker.setup(run_context)
    requests = _requests(small_split, range(60))
    targets = np.array([int(r.candidates[3]) for r in requests])
    fake = [model_scores(r, t) for r, t in zip(requests, targets)]
    monkeypatch.setattr(ranker.decoder, "scores", lambda reqs, inputs: fake[:len(reqs)])
    return ranker, requests, targets, ranker.tune(requests, targets, run_context)


def test_auto_leaves_the_retriever_only_for_a_weight_that_beats_it_significantly(
        registry, run_context, small_split, monkeypatch):
    def oracle(request, target):  # the model puts the target first for two users in three
        found = request.user % 3 != 0
        return [5.0 if (found and c == target) else 0.0 for c in request.candidates]

    ranker, requests, targets, chosen = _tuned(registry, run_context, small_split, monkeypatch, oracle)
    assert chosen["retriever_weight"] == 2.0 == ranker.weight  # 0 to 2 tie (5 > 2 ln 4): the tie's largest wins
    assert chosen["p (one-sided paired t) by retriever_weight"]["0"] < chosen["significance level"] == 0.05 / 6
    assert chosen["NDCG@10 by retriever_weight"]["0"] > 0.8 > 0.5 > chosen["retriever order NDCG@10"]


def test_auto_keeps_the_retriever_order_against_a_lucky_weight_and_then_skips_the_model(
        registry, run_context, small_split, monkeypatch):
    lucky = {3}  # the model finds one user's target: a higher mean, far from significant

    def one_hit(request, target):
        hit = request.user in lucky
        return [5.0 if (hit and c == target) else -float(k) for k, c in enumerate(request.candidates)]

    ranker, requests, targets, chosen = _tuned(registry, run_context, small_split, monkeypatch, one_hit)
    assert chosen["NDCG@10 by retriever_weight"]["0"] > chosen["retriever order NDCG@10"]
    assert chosen["retriever_weight"] == "retriever order" and ranker.weight == float("inf")
    monkeypatch.setattr(ranker.decoder, "scores", lambda *a: pytest.fail("the model ran for the retriever's order"))
    assert ranker.rank(requests, run_context) == [r.candidates.tolist() for r in requests]
    json.dumps(chosen, allow_nan=False)  # metrics.json takes it as it is

    greedy, *_, took = _tuned(registry, run_context, small_split, monkeypatch, one_hit, auto_alpha=1.0)
    assert took["retriever_weight"] == 2.0 == greedy.weight  # no test: the best mean wins, as before the guard


def test_a_bad_retriever_weight_is_named(registry):
    with pytest.raises(ValueError, match="ranker.retriever_weight must be a number >= 0 or auto, got 'fast'"):
        _ranker(registry, retriever_weight="fast")
    with pytest.raises(ValueError, match="retriever_weight"):
        _ranker(registry, retriever_weight=-1.0)


def test_auto_without_tune_ranks_at_the_old_default_and_says_so(registry, run_context, small_split, caplog):
    ranker = _ranker(registry, retriever_weight="auto")
    ranker.setup(run_context)
    requests = _requests(small_split, range(3))
    with caplog.at_level("WARNING", logger="palr"):
        ranked = ranker.rank(requests, run_context)
    assert "tune() was not called" in caplog.text and ranker.weight == 2.0
    fixed = _ranker(registry, retriever_weight=2.0)
    fixed.model, fixed.coder = ranker.model, ranker.coder
    assert fixed.rank(requests, run_context) == ranked


@pytest.mark.parametrize(("option", "values"), [("cpu_kernels", (True, None)), ("pad_to_multiple_of", (32, 1))])
def test_how_options_leave_the_fine_tuning_fingerprint_alone(registry, run_context, training_data, option, values):
    """The padding says how, not what, and ``cpu_kernels`` (ignored since palr 0.3) says nothing:
    folders fine-tuned with other values, or before 0.3 with the kernels on, still resume and load."""
    prints = [_ranker(registry, **{option: value})._fingerprint(training_data, run_context) for value in values]
    assert prints[0] == prints[1] and option not in prints[0]["config"]


def test_the_old_cpu_kernels_option_is_accepted_with_one_warning(registry, caplog):
    """A 0.2 preset or run folder that sets ``ranker.cpu_kernels`` still builds, with one line
    saying the option is ignored and where the migration note is; leaving it out says nothing."""
    with caplog.at_level("WARNING", logger="palr"):
        _ranker(registry)
    assert not [r for r in caplog.records if "cpu_kernels" in r.getMessage()]
    with caplog.at_level("WARNING", logger="palr"):
        _ranker(registry, cpu_kernels=True)
    (line,) = [r.getMessage() for r in caplog.records if "cpu_kernels" in r.getMessage()]
    assert "ignored since palr 0.3" in line and "migrating-to-palr-03" in line
