"""A seeded synthetic movie log with text, sized so the whole pipeline runs in about a minute.

Items come in franchises (an original and its sequels, sharing genres and a title stem); users
have two favourite genres. Each next item is, with probability ``sequel_prob``, the next
unseen instalment of the franchise just watched — a sequential habit a sequence model (and an
LLM reading titles) can learn — and otherwise a popular item of a favourite genre, which is
all that popularity captures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from palr_core import InteractionLog, ItemCatalog, RawDataset, RunContext, option

GENRES = ["Action", "Adventure", "Animation", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "Western"]
ADJECTIVES = ["Silent", "Crimson", "Last", "Hidden", "Golden", "Broken", "Midnight", "Wild",
              "Distant", "Frozen", "Electric", "Secret", "Burning", "Lonely", "Iron", "Velvet",
              "Savage", "Hollow", "Bright", "Lost", "Eternal", "Stolen", "Quiet", "Restless"]
NOUNS = ["Harbor", "Empire", "Garden", "Frontier", "Signal", "Kingdom", "River", "Station",
         "Mirror", "Voyage", "Orchard", "Circuit", "Desert", "Lantern", "Carnival", "Citadel",
         "Meadow", "Archive", "Comet", "Labyrinth", "Canyon", "Symphony", "Horizon", "Island"]
SEQUEL = ["", " II", " III", " IV", " V"]


@dataclass
class SyntheticConfig:
    """Size and habits of the generated data.

    :param users: number of users.
    :param franchises: number of franchises (each has 1-4 films).
    :param min_length: shortest user sequence before 5-core filtering.
    :param mean_extra_length: mean of the Poisson number of items beyond ``min_length``.
    :param sequel_prob: chance that the next item is the next sequel of the last one watched.
    :param seed: generator seed (independent of the run seed, so the data never changes by accident).
    """

    users: int = option(600, min=1)
    franchises: int = option(140, min=1, max=len(ADJECTIVES) * len(NOUNS))
    min_length: int = option(12, min=1)
    mean_extra_length: float = option(12.0, min=0)
    sequel_prob: float = option(0.6, min=0, max=1)
    seed: int = option(7, min=0)


class SyntheticMovies:
    """Dataset plugin: ``palr-run dataset=synthetic`` (the default)."""

    def __init__(self, **params) -> None:
        self.config = SyntheticConfig(**params)

    def load(self, context: RunContext | None = None) -> RawDataset:
        """Generate the log (the same for every run: it has its own ``seed``, not the run's)."""
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        catalog, franchise_of, part, next_in_franchise, genre_sets = _catalog(rng, cfg.franchises)
        n_items = len(catalog)
        # popular franchises stay popular; later instalments are watched less often out of order
        popularity = rng.zipf(1.6, size=cfg.franchises).clip(max=50).astype(float)[franchise_of] / (1 + part)
        genre_matrix = np.zeros((n_items, len(GENRES)))
        for i, gs in enumerate(genre_sets):
            genre_matrix[i, gs] = 1.0
        users, items, stamps = [], [], []
        for u in range(cfg.users):
            favourite = rng.choice(len(GENRES), size=2, replace=False)
            affinity = (genre_matrix[:, favourite].sum(1) + 0.05) * popularity
            length = cfg.min_length + rng.poisson(cfg.mean_extra_length)
            seq = _user_sequence(rng, affinity, next_in_franchise, length, cfg.sequel_prob)
            start = 1_000_000_000 + int(rng.integers(0, 10_000_000))
            users += [u + 1] * len(seq)
            items += [i + 1 for i in seq]
            stamps += [start + 86_400 * step for step in range(len(seq))]
        return RawDataset(
            log=InteractionLog(np.array(users), np.array(items), np.array(stamps, dtype=np.int64)),
            catalog=catalog,
            name="synthetic",
        )


def _catalog(rng: np.random.Generator, n_franchises: int):
    titles, genres, franchise_of, parts, next_item = [], [], [], [], []
    stems = [f"{a} {n}" for a in ADJECTIVES for n in NOUNS]
    chosen = rng.choice(len(stems), size=n_franchises, replace=False)
    for f, stem_index in enumerate(chosen):
        size = int(rng.choice([1, 2, 3, 4], p=[0.25, 0.3, 0.25, 0.2]))
        gs = sorted(rng.choice(len(GENRES), size=int(rng.integers(1, 3)), replace=False).tolist())
        year = int(rng.integers(1950, 2015))
        for part in range(size):
            next_item.append(len(titles) + 1 if part < size - 1 else -1)
            titles.append(f"The {stems[stem_index]}{SEQUEL[part]} ({year + 3 * part})")
            genres.append(gs)
            franchise_of.append(f)
            parts.append(part)
    catalog = ItemCatalog(
        ids=list(range(1, len(titles) + 1)),
        titles=titles,
        attributes={"genres": [[GENRES[g] for g in gs] for gs in genres]},
        domain="movies",
    )
    return catalog, np.array(franchise_of), np.array(parts), np.array(next_item), genres


def _user_sequence(rng, affinity, next_in_franchise, length, sequel_prob) -> list[int]:
    seen = np.zeros(len(affinity), dtype=bool)
    seq: list[int] = []
    while len(seq) < min(length, len(affinity)):
        last = seq[-1] if seq else -1
        follow = next_in_franchise[last] if last >= 0 else -1
        if follow >= 0 and not seen[follow] and rng.random() < sequel_prob:
            item = int(follow)
        else:  # rng.choice(n, p=weights / weights.sum()) as numpy computes it, without its checks of p
            weights = np.where(seen, 0.0, affinity)
            cdf = (weights / weights.sum()).cumsum()
            cdf /= cdf[-1]
            item = int(cdf.searchsorted(rng.random(), side="right"))
        seen[item] = True
        seq.append(item)
    return seq
