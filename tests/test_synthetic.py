"""The synthetic dataset draws each next item as ``rng.choice(n, p=...)`` would (its faster form
must not change the embedded default data, and with it every figure computed on it)."""

import numpy as np
from palr.plugins.synthetic.dataset import _user_sequence


def _reference(rng, affinity, next_in_franchise, length, sequel_prob) -> list[int]:
    seen = np.zeros(len(affinity), dtype=bool)
    seq: list[int] = []
    while len(seq) < min(length, len(affinity)):
        follow = next_in_franchise[seq[-1]] if seq else -1
        if follow >= 0 and not seen[follow] and rng.random() < sequel_prob:
            item = int(follow)
        else:
            weights = np.where(seen, 0.0, affinity)
            item = int(rng.choice(len(weights), p=weights / weights.sum()))
        seen[item] = True
        seq.append(item)
    return seq


def test_each_user_sequence_is_the_one_rng_choice_draws():
    for seed in range(200):
        setup = np.random.default_rng(seed + 10_000)
        affinity = setup.random(40) ** 3 + 1e-3
        nxt = np.where(setup.random(40) < 0.3, setup.integers(0, 40, 40), -1)
        length = int(setup.integers(1, 45))
        ours = _user_sequence(np.random.default_rng(seed), affinity, nxt, length, 0.6)
        assert ours == _reference(np.random.default_rng(seed), affinity, nxt, length, 0.6), seed
