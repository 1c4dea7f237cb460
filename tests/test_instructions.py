"""PALR instruction data: no leakage, the user fraction, similar negatives, 3-hop enrichment, swaps."""

import numpy as np
import pytest
from palr.plugins.llama_lora.instructions import (
    InstructionConfig,
    InteractionGraph,
    build_choice_instructions,
    build_instructions,
)

from palr_core import TrainingData


def _build(data, **overrides):
    return build_instructions(data, "v2", InstructionConfig(**overrides), rng=0)


def test_examples_use_only_training_items_of_their_user(training_data):
    for example in _build(training_data, user_fraction=1.0, swap_prob=0.5):
        train = set(training_data.train[example.user].tolist())
        assert set(example.history.tolist()) <= train
        # enrichment may add other items, but never the user's validation item
        assert training_data.valid[example.user] not in set(example.targets.tolist())
        if example.candidates is not None:
            assert training_data.valid[example.user] not in set(example.candidates.tolist())


def test_history_is_capped_and_targets_follow_the_cut(training_data):
    for example in _build(training_data, user_fraction=1.0, swap_prob=0.0, max_history=5, enrich_below=0):
        sequence = training_data.train[example.user].tolist()
        cut = sequence.index(example.targets[0])
        assert len(example.history) <= 5
        assert example.history.tolist() == sequence[max(0, cut - 5):cut]
        assert example.targets.tolist() == sequence[cut:cut + 10]


def test_twenty_percent_of_users_by_default(training_data):
    users = {e.user for e in build_instructions(training_data, "v1", rng=3)}
    assert len(users) == round(0.2 * len(training_data.train))
    assert users != {e.user for e in build_instructions(training_data, "v1", rng=4)}


def test_same_seed_same_examples(training_data):
    a, b = _build(training_data), _build(training_data)
    assert [(e.user, e.task, e.targets.tolist()) for e in a] == [(e.user, e.task, e.targets.tolist()) for e in b]


def test_v1_has_recommend_only_and_v2_both_tasks(training_data):
    assert {e.task for e in build_instructions(training_data, "v1")} == {"recommend"}
    assert {e.task for e in build_instructions(training_data, "v2")} == {"recommend", "retrieval"}


def test_negatives_share_a_label_or_co_interaction_with_a_target(training_data):
    graph = InteractionGraph(training_data.train, training_data.num_items)
    co = graph.co_interactions
    labels = training_data.catalog.labels
    for example in _build(training_data, swap_prob=0.0):
        if example.task != "retrieval":
            continue
        targets = example.targets.tolist()
        negatives = [c for c in example.candidates.tolist() if c not in targets]
        assert len(negatives) == 10
        for n in negatives:
            shares_label = any(set(labels(n)) & set(labels(t)) for t in targets)
            assert shares_label or any(co[t, n] > 0 for t in targets)


def test_short_target_lists_are_enriched_from_three_hop_affinity(catalog_four):
    # users 0 and 1 share item 1; user 1 also had 4 and 5, so user 0's 3-hop affinity reaches them
    train = [np.array([0, 1, 2, 3]), np.array([1, 4, 5, 6])]
    data = TrainingData(train=train, valid=np.array([7, 7]), catalog=catalog_four)
    examples = build_instructions(data, "v1", InstructionConfig(user_fraction=1.0, swap_prob=0.0,
                                                               enrich_below=3), rng=0)
    first = next(e for e in examples if e.user == 0)
    assert first.targets[0] == 3 and set(first.targets[1:].tolist()) <= {4, 5, 6}
    assert len(first.targets) == 3


def test_swaps_exchange_a_history_item_with_a_target(training_data):
    examples = _build(training_data, user_fraction=1.0, swap_prob=1.0, enrich_below=0)
    for example in examples:
        position = {item: k for k, item in enumerate(training_data.train[example.user].tolist())}
        start = min(position[i] for i in example.history.tolist() + example.targets.tolist())
        cut = start + len(example.history)
        # one item from after the cut now sits in the history, one from before it in the targets
        assert sum(position[h] >= cut for h in example.history.tolist()) == 1
        assert sum(position[t] < cut for t in example.targets.tolist()) == 1


def test_no_swaps_keep_history_before_targets(training_data):
    for example in _build(training_data, user_fraction=1.0, swap_prob=0.0, enrich_below=0):
        position = {item: k for k, item in enumerate(training_data.train[example.user].tolist())}
        assert max(position[h] for h in example.history.tolist()) < min(position[t] for t in example.targets.tolist())


def test_bad_fraction_is_rejected(training_data):
    with pytest.raises(ValueError, match=r"instructions.user_fraction must be > 0 and <= 1, got 0.0"):
        build_instructions(training_data, "v2", InstructionConfig(user_fraction=0.0))


@pytest.fixture
def catalog_four():
    from palr_core import ItemCatalog

    return ItemCatalog(ids=list(range(8)), titles=[f"Film {i}" for i in range(8)])


def test_choice_examples_hold_the_next_item_among_similar_negatives(training_data):
    """One target (the item after the cut), ``num_choices`` distinct candidates, none of them a later
    item of the user or a validation item: the verbalizer learns which candidate comes next."""
    config = InstructionConfig(swap_prob=0.0)
    examples = build_choice_instructions(training_data, 6, config, rng=0)
    assert examples and {e.task for e in examples} == {"choice"}
    for e in examples:
        sequence = training_data.train[e.user].tolist()
        assert len(e.targets) == 1 and len(set(e.candidates.tolist())) == 6 and e.targets[0] in e.candidates
        cut = len(sequence) - sequence[::-1].index(int(e.history[-1]))  # the history ends at the cut
        assert sequence[cut] == e.targets[0]
        negatives = set(e.candidates.tolist()) - {int(e.targets[0])}
        assert not negatives & set(sequence) and training_data.valid[e.user] not in negatives
    assert build_choice_instructions(training_data, 6, config, rng=0)[0].candidates.tolist() == \
        examples[0].candidates.tolist()
