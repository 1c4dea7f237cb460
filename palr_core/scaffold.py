"""``palr new-plugin NAME --kind KIND``: a working third-party plugin distribution, ready to pip-install.

One kind per distribution: a ``retriever`` (the default: a GRU over the user's recent items trained
to predict every next item, GRU4Rec's shape, on palr's shared trained-retriever machinery), a
``ranker`` (reorders the retriever's candidates by what followed the user's last items in
training), a ``dataset`` (reads an interaction log from one CSV file) or a ``profile`` generator
(the words that recur in the titles of a user's recent items). Each is small but real: its own
tests run palr's contract check for its kind (:mod:`palr_core.testing`) and pass once it is
installed. ``docs/plugins.md`` shows the same files (a test keeps the two equal).
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template

from . import __version__
from .hookspecs import PLUGIN_API

__all__ = ["KINDS", "write_plugin", "plugin_files", "run_command"]

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "palr-$name"
version = "0.1.0"
description = "The $name $noun for palr (palr-run $kind=$name)"
requires-python = ">=3.10"
dependencies = ["palr>=$palr"]

# palr finds the plugin through this entry point (name = module name)
[project.entry-points.palr]
palr_$name = "palr_$name"

[tool.setuptools]
packages = ["palr_$name", "palr_$name.conf"]

# the presets folder is package data, or pip leaves it out
[tool.setuptools.package-data]
"palr_$name.conf" = ["*/*.yaml"]
"""

INIT = '''\
"""palr-$name: registers the $name retriever (palr-run retriever=$name) and its presets."""

from palr_core import hookimpl

from .config import ${Name}Config

PALR_PLUGIN_API = $api  # the palr plugin API this plugin is written for


@hookimpl
def register_retrievers(register):
    # the class as "module:Class": imported (with torch) only when a run uses it
    register("$name", "palr_$name.model:${Name}Retriever", config=${Name}Config)


@hookimpl
def register_config_dirs(register):
    register("pkg://palr_$name.conf")
'''

CONFIG = '''\
"""The $name retriever's options. No torch here: palr reads configs at start-up."""

from dataclasses import dataclass

from palr_core.kit.configs import RetrieverConfig


@dataclass
class ${Name}Config(RetrieverConfig):
    """Options of retriever=$name; the shared ones (hidden, dropout, lr, batch_size, maxlen,
    max_epochs, patience, ...) come from RetrieverConfig, with their defaults.

    :param layers: GRU layers.
    """

    layers: int = 1
'''

MODEL = '''\
"""The $name retriever: a GRU reads the user's recent items and scores the whole catalogue for the next one."""

import torch
import torch.nn.functional as F
from palr_core.kit.retrievers import PAD, RetrieverModule, TrainedRetriever, right_pad
from torch import nn

from .config import ${Name}Config


class ${Name}Module(RetrieverModule):
    """The network and its loss. Item ids in tensors are shifted by +1 so that PAD (0) is padding;
    rows are right-padded (pack_padded_sequence's layout) with their lengths beside them."""

    def __init__(self, num_items: int, config: ${Name}Config) -> None:
        super().__init__(num_items, config.lr, config.weight_decay)  # Adam, validation NDCG@10
        self.items = nn.Embedding(num_items + 1, config.hidden, padding_idx=PAD)
        self.gru = nn.GRU(config.hidden, config.hidden, config.layers, batch_first=True)
        self.dropout = nn.Dropout(config.dropout)

    def encode(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The GRU's output after every position: [B, L, hidden]."""
        packed = nn.utils.rnn.pack_padded_sequence(self.dropout(self.items(seq)), lengths.clamp(min=1).cpu(),
                                                   batch_first=True, enforce_sorted=False)
        return nn.utils.rnn.pad_packed_sequence(self.gru(packed)[0], batch_first=True,
                                                total_length=seq.shape[1])[0]

    def score(self, queries: torch.Tensor) -> torch.Tensor:
        """[B, num_items] scores; a query row is [length, item, item, ..., PAD, PAD] (see queries())."""
        lengths, seq = queries[:, 0], queries[:, 1:]
        last = self.encode(seq, lengths)[torch.arange(len(seq)), (lengths - 1).clamp(min=0)]
        return last @ self.items.weight[1:].T

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        seq, lengths = batch  # training_dataset()'s rows: maxlen + 1 items, and how many are real
        seq = seq[:, :int(lengths.max())]  # drop the columns that are padding in every row
        hidden = self.encode(seq[:, :-1], (lengths - 1).clamp(min=1))
        targets = seq[:, 1:]  # every position predicts the item after it
        real = targets != PAD
        loss = F.cross_entropy(hidden[real] @ self.items.weight[1:].T, targets[real] - 1)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(seq))
        return loss


class ${Name}Retriever(TrainedRetriever):
    """palr-run retriever=$name. TrainedRetriever does the rest: Lightning training with early
    stopping on validation NDCG@10, best-checkpoint restore, save/load, batched top-K retrieval."""

    config_class = ${Name}Config  # TrainedRetriever builds self.config = ${Name}Config(**params)

    def build_module(self, num_items: int) -> ${Name}Module:
        return ${Name}Module(num_items, self.config)

    def training_dataset(self, data, context) -> torch.utils.data.Dataset:
        # one row per user: the last maxlen + 1 items of the training prefix (data.train[u])
        return torch.utils.data.TensorDataset(*right_pad(data.train, self.config.maxlen + 1))

    def row_lengths(self, dataset) -> torch.Tensor:
        return dataset.tensors[1]  # batch rows of similar length together (config.length_buckets)

    def queries(self, histories) -> torch.Tensor:
        seq, lengths = right_pad(histories, self.config.maxlen)
        return torch.cat([lengths[:, None], seq], dim=1)  # what score() reads
'''

PRESET = """\
# palr-run retriever=$name-large: a preset says only what differs from ${Name}Config's defaults
defaults:
  - $name
  - _self_

hidden: 128
layers: 2
"""

TEST = '''\
"""The $name retriever against palr's contract, on palr's tiny synthetic data."""

from palr_core.testing import check_retriever, preset_problems

from palr_$name.model import ${Name}Retriever


def test_${name}_fits_retrieves_and_beats_popularity(tmp_path):
    report = check_retriever(${Name}Retriever(hidden=32, lr=0.01, max_epochs=20), tmp_path)
    assert report["NDCG@10"] > report["popularity NDCG@10"], report


def test_presets_say_only_what_differs_from_the_defaults():
    assert preset_problems("pkg://palr_$name.conf") == []
'''

README = """\
# palr-$name

The `$name` $noun for [palr](https://pypi.org/project/palr/): $summary

```bash
pip install -e .              # palr finds it through its entry point
palr plugins                  # lists: $kind  $name  palr-$name  0.1.0  palr_$name
$run
pytest                        # its own tests, on palr's tiny data
```
"""

# -- the other kinds: one light module (numpy, no torch) holds the class and its config --------
INIT_LIGHT = '''\
"""palr-$name: registers the $name $noun (palr-run $kind=$name) and its presets."""

from palr_core import hookimpl

from .$module import ${Name}Config, ${Name}$suffix

PALR_PLUGIN_API = $api  # the palr plugin API this plugin is written for


@hookimpl
def $hook(register):
    register("$name", ${Name}$suffix, config=${Name}Config)


@hookimpl
def register_config_dirs(register):
    register("pkg://palr_$name.conf")
'''

RANKER = '''\
"""The $name ranker: reorders the retriever's candidates by what followed the user's last items in training."""

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from palr_core import RankRequest, RunContext, TrainingData, option


@dataclass
class ${Name}Config:
    """Options of ranker=$name.

    :param window: how many of the user's last items vote for the next one.
    :param decay: an item's vote weighs this much of the vote of the item after it (1: all equal).
    :param ties: the order among candidates with equal votes: ``retriever`` (the retriever's) or
        ``popularity`` (the most interacted with in training first).
    """

    window: int = option(3, min=1)
    decay: float = option(0.5, above=0, max=1)
    ties: str = option("retriever", choices=("retriever", "popularity"))


class ${Name}Ranker:
    """A candidate's score: how often it directly followed each of the user's last ``window`` items
    in the training prefixes, the most recent item's count weighted most."""

    def __init__(self, **params) -> None:
        self.config = ${Name}Config(**params)  # palr builds the ranker as ${Name}Ranker(**options)
        self.follows: dict[int, Counter] = {}
        self.popularity: Counter = Counter()

    def fit(self, data: TrainingData, context: RunContext) -> None:
        follows: dict[int, Counter] = defaultdict(Counter)
        popularity: Counter = Counter()
        for prefix in data.train:  # a user's training items in time order (never a test item)
            items = prefix.tolist()
            popularity.update(items)
            for before, after in zip(items, items[1:]):
                follows[before][after] += 1
        self.follows, self.popularity = dict(follows), popularity

    def rank(self, requests: Sequence[RankRequest], context: RunContext) -> list[list[int]]:
        return [self.order(request) for request in requests]

    def order(self, request: RankRequest) -> list[int]:
        """The request's candidates, best first; equal scores keep the ``ties`` order (a stable sort)."""
        recent = request.history[::-1][:self.config.window].tolist()  # the last item first
        weights = [self.config.decay ** age for age in range(len(recent))]
        candidates = [int(c) for c in request.candidates]  # the retriever's order
        if self.config.ties == "popularity":
            candidates.sort(key=lambda c: -self.popularity[c])
        votes = {c: sum(w * self.follows.get(item, {}).get(c, 0) for w, item in zip(weights, recent))
                 for c in candidates}
        return sorted(candidates, key=lambda c: -votes[c])
'''

RANKER_PRESET = """\
# palr-run ranker=$name-long: a preset says only what differs from ${Name}Config's defaults
defaults:
  - $name
  - _self_

window: 10
decay: 0.8
"""

RANKER_TEST = '''\
"""The $name ranker against palr's contract, on palr's tiny synthetic data."""

import pytest
from palr_core import ComponentConfigError, load_registry
from palr_core.testing import check_ranker, preset_problems

from palr_$name.ranker import ${Name}Ranker


def test_${name}_ranks_every_request_and_beats_the_candidate_order(tmp_path):
    report = check_ranker(${Name}Ranker(), tmp_path)
    assert report["NDCG@10"] > report["candidates NDCG@10"], report


def test_an_option_out_of_range_is_refused_before_a_run():
    with pytest.raises(ComponentConfigError, match="ranker.window must be >= 1, got 0"):
        load_registry().build("ranker", "$name", {"window": 0})


def test_presets_say_only_what_differs_from_the_defaults():
    assert preset_problems("pkg://palr_$name.conf") == []
'''

DATASET = '''\
"""The $name dataset: an interaction log in one CSV file, one row per interaction."""

import csv
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from palr_core import DataError, InteractionLog, ItemCatalog, RawDataset, RunContext, option

COLUMNS = ("user", "item", "timestamp")  # required; "title" is optional


@dataclass
class ${Name}Config:
    """Options of dataset=$name.

    :param path: the CSV file (required: ``palr-run dataset=$name dataset.path=log.csv``). Its
        header names the columns ``user``, ``item``, ``timestamp`` (a number) and, optionally,
        ``title`` (an item without one is titled by its id).
    :param delimiter: the field separator.
    :param max_rows: read only the first rows, for a quick try (``null``: all).
    :param domain: ``movies`` or ``products``: the wording of prompts.
    """

    path: str = "???"
    delimiter: str = option(",", choices=(",", ";", "\\t", "|"))
    max_rows: int | None = option(None, min=1)
    domain: str = option("products", choices=("movies", "products"))


class ${Name}Dataset:
    """Reads the file as it is: deduplication, time order, k-core filtering and the split are palr's."""

    def __init__(self, **params) -> None:
        self.config = ${Name}Config(**params)  # palr builds the dataset as ${Name}Dataset(**options)

    def load(self, context: RunContext) -> RawDataset:
        path = Path(self.config.path).expanduser()
        if not path.is_file():
            raise DataError(f"dataset.path: there is no file {path}")
        with path.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file, delimiter=self.config.delimiter)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: the header {reader.fieldnames} lacks {', '.join(missing)} "
                                f"(is dataset.delimiter {self.config.delimiter!r} right?)")
            rows = list(itertools.islice(reader, self.config.max_rows))
        titles: dict[str, str] = {}
        for row in rows:
            titles.setdefault(row["item"], row.get("title") or row["item"])  # the first title given
        log = InteractionLog(users=np.array([row["user"] for row in rows]),
                             items=np.array([row["item"] for row in rows]),
                             timestamps=np.array([_number(row["timestamp"], path, line)
                                                  for line, row in enumerate(rows, start=2)]))
        catalog = ItemCatalog(ids=list(titles), titles=list(titles.values()), domain=self.config.domain)
        return RawDataset(log=log, catalog=catalog, name=path.stem)


def _number(text: str, path: Path, line: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{path}, line {line}: timestamp {text!r} is not a number") from None
'''

DATASET_PRESET = """\
# palr-run dataset=$name-tsv dataset.path=log.tsv: a preset says only what differs from ${Name}Config's defaults
defaults:
  - $name
  - _self_

delimiter: "\\t"
"""

DATASET_TEST = '''\
"""The $name dataset against palr's contract: a CSV written here loads, preprocesses and splits."""

import numpy as np
import pytest
from palr_core import ComponentConfigError, load_registry
from palr_core.testing import check_dataset, preset_problems

from palr_$name.dataset import ${Name}Dataset


def write_log(path, users=30, items=20, per_user=8, seed=0):
    """A small log: each user's items with increasing timestamps, and their titles."""
    rng = np.random.default_rng(seed)
    rows = ["user,item,timestamp,title"]
    for user in range(users):
        rows += [f"u{user},i{item},{time},Film {item}"
                 for time, item in enumerate(rng.choice(items, per_user, replace=False))]
    path.write_text("\\n".join(rows) + "\\n")
    return path


def test_${name}_reads_a_csv_that_palr_preprocesses_and_splits(tmp_path):
    data = check_dataset(${Name}Dataset(path=str(write_log(tmp_path / "log.csv"))), tmp_path)
    assert data.data.stats.users == 30
    assert all(title == f"Film {item[1:]}" for item, title in zip(data.catalog.ids, data.catalog.titles))


def test_the_path_is_required():
    with pytest.raises(ComponentConfigError, match="needs dataset.path"):
        load_registry().build("dataset", "$name", {})


def test_presets_say_only_what_differs_from_the_defaults():
    assert preset_problems("pkg://palr_$name.conf") == []
'''

PROFILE = '''\
"""The $name profile generator: the words that recur in the titles of a user's recent items."""

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from palr_core import ItemCatalog, RunContext, option


@dataclass
class ${Name}Config:
    """Options of profile=$name.

    :param keywords: words in a profile.
    :param recent: only the last ``recent`` history items count.
    :param min_length: shorter words ("the", "of") are left out.
    :param style: ``sentence`` ("The user often picks movies whose titles mention harbor, empire.")
        or ``list`` ("harbor, empire").
    """

    keywords: int = option(3, min=1)
    recent: int = option(20, min=1)
    min_length: int = option(4, min=1)
    style: str = option("sentence", choices=("sentence", "list"))


class ${Name}Profiles:
    """Counts each title word once per item over the user's recent items and keeps the most frequent;
    ties go to the word seen most recently. A history without such words gets no profile (``""``)."""

    def __init__(self, **params) -> None:
        self.config = ${Name}Config(**params)  # palr builds the generator as ${Name}Profiles(**options)

    def generate(self, users: Sequence[int], histories: Sequence[np.ndarray], context: RunContext) -> list[str]:
        return [self.profile(np.asarray(h)[-self.config.recent:], context.catalog) for h in histories]

    def profile(self, history: np.ndarray, catalog: ItemCatalog) -> str:
        """One user's profile text from their history (catalogue indices, oldest first)."""
        counts: Counter = Counter()
        last_seen: dict[str, int] = {}
        for position, item in enumerate(history.tolist()):
            for word in set(re.findall(r"[a-z]+", catalog.titles[item].lower())):
                if len(word) >= self.config.min_length:
                    counts[word] += 1
                    last_seen[word] = position
        words = sorted(counts, key=lambda w: (-counts[w], -last_seen[w], w))[:self.config.keywords]
        if not words or self.config.style == "list":
            return ", ".join(words)
        return f"The user often picks {catalog.domain} whose titles mention {', '.join(words)}."
'''

PROFILE_PRESET = """\
# palr-run profile=$name-list: a preset says only what differs from ${Name}Config's defaults
defaults:
  - $name
  - _self_

keywords: 5
style: list
"""

PROFILE_TEST = '''\
"""The $name profile generator against palr's contract, on palr's tiny synthetic data."""

import pytest
from palr_core import ComponentConfigError, load_registry
from palr_core.testing import check_profile_generator, preset_problems

from palr_$name.generator import ${Name}Profiles


def test_${name}_writes_a_profile_from_title_words_for_every_user(tmp_path):
    profiles = check_profile_generator(${Name}Profiles(keywords=2), tmp_path)
    assert all(p.startswith("The user often picks movies whose titles mention ") for p in profiles), profiles


def test_an_unknown_choice_is_refused_before_a_run():
    with pytest.raises(ComponentConfigError, match="profile.style must be one of sentence, list"):
        load_registry().build("profile", "$name", {"style": "table"})


def test_presets_say_only_what_differs_from_the_defaults():
    assert preset_problems("pkg://palr_$name.conf") == []
'''


@dataclass(frozen=True)
class Kind:
    """What ``--kind`` writes: the words that name it, and its files beside the shared ones.

    :param noun: the kind in prose ("profile generator").
    :param summary: the README's one sentence on what the component does.
    :param run: the README's ``palr-run`` line.
    :param files: path (under the distribution, ``$name`` substituted) -> text template.
    """

    noun: str
    summary: str
    run: str
    files: dict[str, str]


def _light(module: str, suffix: str, hook: str, text: str, preset: str, test: str, preset_name: str) -> dict:
    """The files of a kind whose class and config share one module (no torch: listing stays fast)."""
    init = Template(INIT_LIGHT).safe_substitute(module=module, suffix=suffix, hook=hook)
    return {"palr_$name/__init__.py": init, f"palr_$name/{module}.py": text,
            f"palr_$name/conf/$kind/{preset_name}.yaml": preset, "tests/test_$name.py": test}


#: ``--kind`` -> what it writes (the retriever keeps palr 0.2's files)
KINDS: dict[str, Kind] = {
    "retriever": Kind(
        "retriever", "a GRU over the user's recent\nitems, trained to predict every next item.",
        "palr-run retriever=$name      # or the preset: palr-run retriever=$name-large",
        {"palr_$name/__init__.py": INIT, "palr_$name/config.py": CONFIG, "palr_$name/model.py": MODEL,
         "palr_$name/conf/retriever/$name-large.yaml": PRESET, "tests/test_$name.py": TEST}),
    "ranker": Kind(
        "ranker", "reorders the retriever's candidates by what followed the user's last items in training.",
        "palr-run ranker=$name         # or the preset: palr-run ranker=$name-long",
        _light("ranker", "Ranker", "register_rankers", RANKER, RANKER_PRESET, RANKER_TEST, "$name-long")),
    "dataset": Kind(
        "dataset", "an interaction log in one CSV file (user, item, timestamp and an optional title per row).",
        "palr-run dataset=$name dataset.path=log.csv   # a TSV: dataset=$name-tsv",
        _light("dataset", "Dataset", "register_datasets", DATASET, DATASET_PRESET, DATASET_TEST, "$name-tsv")),
    "profile": Kind(
        "profile generator", "the words that recur in the titles of a user's recent items.",
        "palr-run profile=$name        # or the preset: palr-run profile=$name-list",
        _light("generator", "Profiles", "register_profile_generators", PROFILE, PROFILE_PRESET, PROFILE_TEST,
               "$name-list")),
}


def _names(name: str, kind: str) -> dict[str, str]:
    if kind not in KINDS:
        raise ValueError(f"--kind {kind!r}: choose one of {', '.join(KINDS)}")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise ValueError(f"plugin name {name!r}: use lower-case letters, digits and _, starting with a letter "
                         f"(it becomes the package palr_<name> and the option {kind}=<name>)")
    return {"name": name, "Name": "".join(part.capitalize() for part in name.split("_") if part), "kind": kind,
            "noun": KINDS[kind].noun, "api": str(PLUGIN_API), "palr": ".".join(__version__.split(".")[:2])}


def plugin_files(name: str, kind: str = "retriever") -> dict[str, str]:
    """Relative path -> text of every file of the ``palr-<name>`` distribution of a ``kind`` component."""
    names = _names(name, kind)
    spec = KINDS[kind]
    readme = Template(README).safe_substitute(summary=spec.summary, run=spec.run)
    files = {"pyproject.toml": PYPROJECT, "README.md": readme, "palr_$name/conf/__init__.py": "", **spec.files}
    return {Template(path).substitute(names): Template(text).substitute(names) for path, text in files.items()}


def run_command(name: str, kind: str = "retriever") -> str:
    """The ``palr-run`` line that uses the written component (the README's)."""
    return Template(KINDS[kind].run).substitute(_names(name, kind)).split("#")[0].rstrip()


def write_plugin(name: str, directory: Path, kind: str = "retriever") -> Path:
    """Write ``<directory>/palr-<name>/``; refuses to overwrite an existing folder."""
    root = Path(directory).expanduser() / f"palr-{name}"
    files = plugin_files(name, kind)
    if root.exists():
        raise FileExistsError(f"{root} already exists; choose another name or --directory")
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
