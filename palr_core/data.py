"""Interaction logs, item catalogues, preprocessing (dedup, chronology, k-core) and the split.

Everything here is plain numpy: a Dataset plugin hands over an :class:`InteractionLog` (raw ids,
file order) and an :class:`ItemCatalog` (text per raw item id); :func:`preprocess` turns them into
per-user chronological sequences over contiguous item ids ``0..num_items-1``, and
:func:`leave_one_out_split` holds out the last two items of each sequence, while
:func:`temporal_split` cuts the whole log at two points in time (:func:`split_data` picks one).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .atomic import write_atomic

__all__ = [
    "InteractionLog",
    "ItemCatalog",
    "RawDataset",
    "SequenceData",
    "DatasetStats",
    "Split",
    "DataError",
    "preprocess",
    "leave_one_out_split",
    "temporal_split",
    "split_data",
    "iterative_k_core",
    "fingerprint",
    "save_raw",
    "load_raw",
    "save_sequences",
    "load_sequences",
]


class DataError(ValueError):
    """Input data that cannot be used, with a message that says where and what was expected."""


@dataclass(frozen=True)
class InteractionLog:
    """Raw implicit-feedback events in file order.

    ``users`` and ``items`` hold raw ids (any hashable, usually int or str); ``timestamps`` is
    ``None`` when the source has no time, in which case file order is the time order.
    """

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.users)
        if len(self.items) != n or (self.timestamps is not None and len(self.timestamps) != n):
            raise DataError(
                f"InteractionLog columns differ in length: users={n}, items={len(self.items)}, "
                f"timestamps={None if self.timestamps is None else len(self.timestamps)}"
            )

    def __len__(self) -> int:
        return len(self.users)


@dataclass(frozen=True)
class ItemCatalog:
    """Text for every item: what prompts show and what negatives are drawn by.

    :param ids: raw item ids, position = catalogue index.
    :param titles: a display title per item (never empty: loaders fill a fallback).
    :param attributes: named lists of labels per item, e.g. ``{"genres": [["Comedy"], ...]}``.
    :param domain: ``"movies"`` or ``"products"``; selects prompt templates.
    :param show_id: render items as ``"<raw id> (<title>)"`` (Amazon style) instead of the title.
    """

    ids: list
    titles: list[str]
    attributes: dict[str, list[list[str]]] = field(default_factory=dict)
    domain: str = "movies"
    show_id: bool = False

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.titles):
            raise DataError(f"ItemCatalog: {len(self.ids)} ids but {len(self.titles)} titles")
        for name, values in self.attributes.items():
            if len(values) != len(self.ids):
                raise DataError(
                    f"ItemCatalog attribute {name!r} has {len(values)} rows, expected {len(self.ids)}"
                )

    def __len__(self) -> int:
        return len(self.ids)

    def render(self, index: int) -> str:
        """The item as prompts show it: its title, or ``"ASIN (title)"`` when ``show_id``."""
        title = self.titles[index]
        return f"{self.ids[index]} ({title})" if self.show_id else title

    def labels(self, index: int) -> list[str]:
        """All attribute labels of an item (genres, categories, brand...), in attribute order."""
        return [label for values in self.attributes.values() for label in values[index]]

    def subset(self, indices: Sequence[int]) -> ItemCatalog:
        """A catalogue of the given items, renumbered ``0..len(indices)-1`` in that order."""
        return ItemCatalog(
            ids=[self.ids[i] for i in indices],
            titles=[self.titles[i] for i in indices],
            attributes={k: [v[i] for i in indices] for k, v in self.attributes.items()},
            domain=self.domain,
            show_id=self.show_id,
        )


@dataclass(frozen=True)
class RawDataset:
    """What a Dataset plugin returns: the log and the text of (at least) every logged item."""

    log: InteractionLog
    catalog: ItemCatalog
    name: str = "dataset"


@dataclass(frozen=True)
class DatasetStats:
    users: int
    items: int
    interactions: int

    @property
    def density(self) -> float:
        return self.interactions / max(1, self.users * self.items)

    def as_dict(self) -> dict:
        return {**asdict(self), "density": self.density}

    def table(self, title: str = "") -> str:
        """A one-row markdown table, for the console and the run directory."""
        head = f"{title}\n" if title else ""
        return (
            f"{head}| users | items | interactions | density |\n|---:|---:|---:|---:|\n"
            f"| {self.users:,} | {self.items:,} | {self.interactions:,} | {self.density:.4%} |"
        )


@dataclass(frozen=True)
class SequenceData:
    """Per-user chronological sequences over catalogue indices ``0..num_items-1``.

    ``timestamps[u][j]`` is the time of ``sequences[u][j]``; ``None`` when the log had no time.
    """

    sequences: list[np.ndarray]
    user_ids: list
    catalog: ItemCatalog
    name: str = "dataset"
    timestamps: list[np.ndarray] | None = None

    @property
    def num_items(self) -> int:
        return len(self.catalog)

    @property
    def stats(self) -> DatasetStats:
        return DatasetStats(
            users=len(self.sequences),
            items=self.num_items,
            interactions=int(sum(len(s) for s in self.sequences)),
        )


@dataclass(frozen=True)
class Split:
    """Training rows (a training sequence and a validation item each) and test rows (a history and
    a test item each).

    Leave-one-out (:func:`leave_one_out_split`): row ``u`` is user ``u`` in both, the test history
    is the training prefix plus the validation item, and the optional fields stay ``None``. A
    temporal split (:func:`temporal_split`) has its own rows for each, named by ``train_users`` and
    ``test_users``.

    :param train: per training row, the sequence a model learns from.
    :param valid: per training row, the item that follows it (early stopping, tuning).
    :param test: per test row, the held-out item.
    :param test_history: per test row, what a model sees when predicting it (``None``: train + valid).
    :param train_users: the dataset user (index into ``SequenceData.sequences``) of each training
        row (``None``: row ``u`` is user ``u``).
    :param test_users: the same for test rows.
    :param valid_rows: the training rows whose ``valid`` item is a real validation target, the rows
        to measure and tune on (``None``: every row).
    :param cuts: a temporal split's cut timestamps, ``{"valid": ..., "test": ...}``.
    """

    train: list[np.ndarray]
    valid: np.ndarray
    test: np.ndarray
    num_items: int
    test_history: list[np.ndarray] | None = None
    train_users: np.ndarray | None = None
    test_users: np.ndarray | None = None
    valid_rows: np.ndarray | None = None
    cuts: dict | None = None

    def histories(self, stage: str) -> list[np.ndarray]:
        """What a model may see when predicting ``stage`` (``"valid"``: train, one per training
        row; ``"test"``: one per test row, for leave-one-out train+valid)."""
        if stage == "valid":
            return self.train
        if stage == "test":
            if self.test_history is not None:
                return self.test_history
            return [np.append(t, v) for t, v in zip(self.train, self.valid)]
        raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}")

    def validation_rows(self) -> np.ndarray:
        """The training rows with a real validation target (all of them for leave-one-out)."""
        return np.arange(len(self.valid)) if self.valid_rows is None else self.valid_rows

    def user_of(self, stage: str, rows) -> np.ndarray:
        """The dataset users of training (``"valid"``) or test (``"test"``) rows."""
        users = self.train_users if stage == "valid" else self.test_users
        rows = np.asarray(rows, dtype=np.int64)
        return rows if users is None else users[rows]


def iterative_k_core(user_codes: np.ndarray, item_codes: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of events kept after repeatedly dropping users and items with < k events."""
    keep = np.ones(len(user_codes), dtype=bool)
    if k <= 1:
        return keep
    while True:
        u, i = user_codes[keep], item_codes[keep]
        user_ok = np.bincount(u, minlength=user_codes.max() + 1) >= k
        item_ok = np.bincount(i, minlength=item_codes.max() + 1) >= k
        ok = user_ok[u] & item_ok[i]
        if ok.all():
            return keep
        keep[np.flatnonzero(keep)[~ok]] = False
        if not keep.any():
            return keep


def preprocess(raw: RawDataset, k_core: int = 5) -> SequenceData:
    """The paper's preprocessing: implicit feedback, per-user dedup, chronological, iterative k-core.

    Every logged event counts as an interaction. A user's repeated item keeps its first
    occurrence in time; time ties keep file order (a stable sort). Items and users are then
    numbered in order of first appearance in the filtered log, so the result is deterministic.
    """
    log = raw.log
    if len(log) == 0:
        raise DataError(f"dataset {raw.name!r} has no interactions")
    user_raw, user_codes = np.unique(log.users, return_inverse=True)
    item_raw, item_codes = np.unique(log.items, return_inverse=True)
    # chronological per user, ties in file order
    if log.timestamps is None:
        order = np.argsort(user_codes, kind="stable")
    else:
        order = np.lexsort((np.asarray(log.timestamps), user_codes))  # lexsort is stable
    u, i = user_codes[order].astype(np.int64), item_codes[order].astype(np.int64)
    t = None if log.timestamps is None else np.asarray(log.timestamps)[order]
    # per-user dedup, keeping the earliest event
    pair = u * (len(item_raw) + 1) + i
    _, first = np.unique(pair, return_index=True)
    dedup = np.zeros(len(pair), dtype=bool)
    dedup[first] = True
    u, i = u[dedup], i[dedup]
    keep = iterative_k_core(u, i, k_core)
    u, i = u[keep], i[keep]
    if t is not None:
        t = t[dedup][keep]
    if len(u) == 0:
        raise DataError(f"dataset {raw.name!r}: nothing left after {k_core}-core filtering")

    catalog_index = _catalog_positions(raw.catalog, item_raw, raw.name)
    kept_items = _first_appearance(i)
    item_new = np.full(len(item_raw), -1, dtype=np.int64)
    item_new[kept_items] = np.arange(len(kept_items))
    kept_users = _first_appearance(u)
    boundaries = np.flatnonzero(np.diff(u)) + 1
    per_user = np.split(item_new[i], boundaries)
    starts = u[np.r_[0, boundaries]].tolist()
    by_user = dict(zip(starts, per_user))
    times = None if t is None else dict(zip(starts, np.split(t, boundaries)))
    return SequenceData(
        sequences=[by_user[x] for x in kept_users.tolist()],
        user_ids=user_raw[kept_users].tolist(),
        catalog=raw.catalog.subset(catalog_index[kept_items].tolist()),
        name=raw.name,
        timestamps=None if times is None else [times[x] for x in kept_users.tolist()],
    )


def _first_appearance(codes: np.ndarray) -> np.ndarray:
    uniq, first = np.unique(codes, return_index=True)
    return uniq[np.argsort(first, kind="stable")]


def _catalog_positions(catalog: ItemCatalog, item_raw: np.ndarray, name: str) -> np.ndarray:
    position = {key: idx for idx, key in enumerate(catalog.ids)}
    missing = [x for x in item_raw.tolist() if x not in position]
    if missing:
        raise DataError(
            f"dataset {name!r}: {len(missing)} logged item ids have no catalogue entry "
            f"(e.g. {missing[:5]}); a Dataset must give every logged item a title"
        )
    return np.array([position[x] for x in item_raw.tolist()], dtype=np.int64)


def leave_one_out_split(data: SequenceData) -> Split:
    """Last item test, second-to-last validation, the rest training (users need >= 3 items)."""
    short = [uid for uid, s in zip(data.user_ids, data.sequences) if len(s) < 3]
    if short:
        raise DataError(
            f"dataset {data.name!r}: {len(short)} users have fewer than 3 interactions "
            f"(e.g. user {short[0]!r}); leave-one-out needs 3 — set preprocess.k_core to at least 3"
        )
    return Split(
        train=[s[:-2] for s in data.sequences],
        valid=np.array([s[-2] for s in data.sequences], dtype=np.int64),
        test=np.array([s[-1] for s in data.sequences], dtype=np.int64),
        num_items=data.num_items,
    )


def temporal_split(data: SequenceData, valid_fraction: float = 0.1, test_fraction: float = 0.1) -> Split:
    """A global time cut: the latest ``test_fraction`` of all interactions form the test window, the
    ``valid_fraction`` before them the validation window, and everything earlier is training.

    The cuts are timestamps: ``test`` is the time of the earliest of the last
    ``round(n * test_fraction)`` interactions by time, ``valid`` that of the last
    ``round(n * (valid_fraction + test_fraction))`` (ties at a cut fall inside its window, so a
    window can hold a few more interactions than its fraction). Nothing at or after a cut is ever
    shown for the window before it:

    - training rows: each user with interactions before ``valid``; their sequence is what they did
      before it. A user active in the validation window has that window's first item as the
      validation target (a :attr:`Split.valid_rows` row, where validation metrics and tuning are
      measured); a user who is not holds out their last training item instead, for early stopping
      only (users with a single training item and no validation item are left out);
    - test rows: each user with an interaction at or after ``test`` and at least one before it;
      the target is their first item in the test window, the history everything before ``test``.
    """
    if data.timestamps is None:
        raise DataError(f"dataset {data.name!r} has no timestamps: preprocess.split=temporal cuts the log by time; "
                        "use preprocess.split=leave_one_out")
    flat = np.sort(np.concatenate(data.timestamps), kind="stable")
    n_test = max(1, round(len(flat) * test_fraction))
    n_valid = max(1, round(len(flat) * (valid_fraction + test_fraction)) - n_test)
    if n_test + n_valid >= len(flat):
        raise DataError(f"dataset {data.name!r}: preprocess.valid_fraction + preprocess.test_fraction leave no "
                        f"training interactions of {len(flat)}")
    valid_cut, test_cut = flat[len(flat) - n_test - n_valid], flat[len(flat) - n_test]
    if not flat[0] < valid_cut < test_cut:
        raise DataError(f"dataset {data.name!r}: the temporal cuts fall on tied timestamps (validation from "
                        f"{valid_cut}, test from {test_cut}, first {flat[0]}); change preprocess.valid_fraction "
                        "or preprocess.test_fraction")
    train, valid, train_users, valid_rows, test, history, test_users = [], [], [], [], [], [], []
    for user, (items, times) in enumerate(zip(data.sequences, data.timestamps)):
        before = items[times < valid_cut]
        in_valid = items[(times >= valid_cut) & (times < test_cut)]
        if len(before) and len(in_valid):
            valid_rows.append(len(train))
            train.append(before), valid.append(in_valid[0]), train_users.append(user)
        elif len(before) >= 2:
            train.append(before[:-1]), valid.append(before[-1]), train_users.append(user)
        seen, in_test = items[times < test_cut], items[times >= test_cut]
        if len(seen) and len(in_test):
            history.append(seen), test.append(in_test[0]), test_users.append(user)
    if not valid_rows or not test:
        raise DataError(f"dataset {data.name!r}: the temporal split left {len(valid_rows)} validation and "
                        f"{len(test)} test users; change preprocess.valid_fraction or preprocess.test_fraction")
    as_int = functools.partial(np.array, dtype=np.int64)
    return Split(train=train, valid=as_int(valid), test=as_int(test), num_items=data.num_items,
                 test_history=history, train_users=as_int(train_users), test_users=as_int(test_users),
                 valid_rows=as_int(valid_rows), cuts={"valid": valid_cut.item(), "test": test_cut.item()})


def split_data(data: SequenceData, split: str = "leave_one_out", valid_fraction: float = 0.1,
               test_fraction: float = 0.1) -> Split:
    """The split ``split`` names (``preprocess.split``): :func:`leave_one_out_split` or :func:`temporal_split`."""
    if split == "leave_one_out":
        return leave_one_out_split(data)
    if split == "temporal":
        return temporal_split(data, valid_fraction, test_fraction)
    raise DataError(f"preprocess.split must be leave_one_out or temporal, got {split!r}")


def fingerprint(raw: RawDataset) -> str:
    """sha256 of a raw dataset's log and catalogue: equal fingerprints mean equal preprocessing input.

    String columns hash their text whatever their numpy dtype, so a log read back from a cache
    (fixed-width strings) has the fingerprint of the freshly parsed one (Python strings).
    """
    h = hashlib.sha256(raw.name.encode())
    for column in (raw.log.users, raw.log.items, raw.log.timestamps):
        if column is None:
            h.update(b"<none>")
        elif column.dtype.kind in "biuf":  # fixed-width numbers: hash the buffer itself
            h.update(column.dtype.str.encode() + np.ascontiguousarray(column).tobytes())
        else:  # text ids, hashed in blocks so a 20M-row log never becomes one giant string
            h.update(b"<text>")
            for start in range(0, len(column), 1 << 20):
                h.update("\x1f".join(map(str, column[start:start + (1 << 20)].tolist())).encode())
    h.update(json.dumps(_catalog_document(raw.catalog), sort_keys=True).encode())
    return h.hexdigest()


# -- storage in formats that cannot run code: .npz without pickle, and JSON -------------------
def _catalog_document(catalog: ItemCatalog) -> dict:
    ids = [x.item() if isinstance(x, np.generic) else x for x in catalog.ids]
    for item in ids[:1]:
        if not isinstance(item, (int, str)):
            raise DataError(f"ItemCatalog ids must be int or str to be stored, got {type(item).__name__}")
    return {"ids": ids, "titles": [str(t) for t in catalog.titles], "domain": catalog.domain,
            "attributes": {k: [[str(v) for v in row] for row in rows] for k, rows in catalog.attributes.items()},
            "show_id": bool(catalog.show_id)}


def _catalog_from_document(doc: dict) -> ItemCatalog:
    return ItemCatalog(ids=doc["ids"], titles=doc["titles"], attributes=doc["attributes"],
                       domain=doc["domain"], show_id=doc["show_id"])


def _pack_column(arrays: dict, name: str, column: np.ndarray | None) -> None:
    """Numbers as they are; text as unique values plus integer codes (no object arrays, no pickle)."""
    if column is None:
        return
    if column.dtype.kind in "biuf":
        arrays[name] = column
        return
    values, codes = np.unique(np.asarray(column, dtype=str), return_inverse=True)
    arrays[name + ".values"], arrays[name + ".codes"] = values, codes.astype(np.int64)


def _unpack_column(arrays, name: str) -> np.ndarray | None:
    if name in arrays:
        return arrays[name]
    if name + ".values" in arrays:
        return arrays[name + ".values"][arrays[name + ".codes"]]
    return None


def _store(directory: Path, file: str, arrays: dict, name: str, catalog: ItemCatalog) -> None:
    np.savez(Path(directory) / file, **arrays)
    (Path(directory) / "catalog.json").write_text(json.dumps({"name": name, **_catalog_document(catalog)}))


def _stored(directory: Path, file: str) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays (read with ``allow_pickle=False``: a crafted file cannot run code) and the JSON document."""
    doc = json.loads((Path(directory) / "catalog.json").read_text())
    with np.load(Path(directory) / file, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}, doc


def save_raw(raw: RawDataset, directory: Path) -> None:
    """Write a raw dataset as ``log.npz`` (no pickled objects) and ``catalog.json``."""
    arrays: dict[str, np.ndarray] = {}
    for name in ("users", "items", "timestamps"):
        _pack_column(arrays, name, getattr(raw.log, name))
    _store(directory, "log.npz", arrays, raw.name, raw.catalog)


def load_raw(directory: Path) -> RawDataset:
    """Read what :func:`save_raw` wrote."""
    arrays, doc = _stored(directory, "log.npz")
    log = InteractionLog(*(_unpack_column(arrays, name) for name in ("users", "items", "timestamps")))
    return RawDataset(log=log, catalog=_catalog_from_document(doc), name=doc["name"])


def save_sequences(data: SequenceData, directory: Path) -> None:
    """Write preprocessed sequences as one flat ``sequences.npz`` and ``catalog.json``."""
    arrays = {"items": np.concatenate(data.sequences) if data.sequences else np.zeros(0, np.int64),
              "lengths": np.array([len(s) for s in data.sequences], dtype=np.int64)}
    if data.timestamps is not None and data.timestamps:
        _pack_column(arrays, "timestamps", np.concatenate(data.timestamps))
    _pack_column(arrays, "user_ids", np.asarray(data.user_ids))
    _store(directory, "sequences.npz", arrays, data.name, data.catalog)


def load_sequences(directory: Path) -> SequenceData:
    """Read what :func:`save_sequences` wrote."""
    arrays, doc = _stored(directory, "sequences.npz")
    cuts = np.cumsum(arrays["lengths"])[:-1]
    sequences = np.split(arrays["items"], cuts)
    stamps = _unpack_column(arrays, "timestamps")
    times = None if stamps is None else np.split(stamps, cuts)
    return SequenceData(sequences=sequences, user_ids=_unpack_column(arrays, "user_ids").tolist(),
                        catalog=_catalog_from_document(doc), name=doc["name"], timestamps=times)


def save_stats(stats: DatasetStats, path: Path, title: str) -> None:
    """Write the statistics as JSON and markdown next to each other, each atomically and never
    through a link that leads out of ``path``'s folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path.with_suffix(".json"), json.dumps(stats.as_dict(), indent=2), path.parent)
    write_atomic(path.with_suffix(".md"), stats.table(title) + "\n", path.parent)
