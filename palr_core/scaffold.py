"""``palr new-plugin NAME``: a working third-party retriever distribution, ready to pip-install.

The retriever it writes is a GRU over the user's recent items trained to predict every next item
(GRU4Rec's shape) on palr's shared trained-retriever machinery; its own test runs
:func:`palr_core.testing.check_retriever`. ``docs/plugins.md`` shows the same files (a test keeps
the two equal).
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from string import Template

__all__ = ["write_plugin", "plugin_files"]

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "palr-$name"
version = "0.1.0"
description = "The $name retriever for palr (palr-run retriever=$name)"
requires-python = ">=3.10"
dependencies = ["palr>=0.2"]

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

PALR_PLUGIN_API = 2  # the palr plugin API this plugin is written for


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
from torch import nn

from palr_core.kit.retrievers import PAD, RetrieverModule, TrainedRetriever, right_pad

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

The `$name` retriever for [palr](https://pypi.org/project/palr/): a GRU over the user's recent
items, trained to predict every next item.

```bash
pip install -e .              # palr finds it through its entry point
palr plugins                  # lists: retriever  $name  palr-$name  0.1.0  palr_$name
palr-run retriever=$name      # or the preset: palr-run retriever=$name-large
pytest                        # its own tests, on palr's tiny data
```
"""


def _names(name: str) -> dict[str, str]:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise ValueError(f"plugin name {name!r}: use lower-case letters, digits and _, starting with a letter "
                         "(it becomes the package palr_<name> and the option retriever=<name>)")
    return {"name": name, "Name": "".join(part.capitalize() for part in name.split("_") if part)}


def plugin_files(name: str) -> dict[str, str]:
    """Relative path -> text of every file of the ``palr-<name>`` distribution."""
    names = _names(name)
    package = f"palr_{name}"
    files = {
        "pyproject.toml": PYPROJECT, "README.md": README, f"{package}/__init__.py": INIT,
        f"{package}/config.py": CONFIG, f"{package}/model.py": MODEL, f"{package}/conf/__init__.py": "",
        f"{package}/conf/retriever/{name}-large.yaml": PRESET, f"tests/test_{name}.py": TEST,
    }
    return {path: Template(text).substitute(names) for path, text in files.items()}


def write_plugin(name: str, directory: Path) -> Path:
    """Write ``<directory>/palr-<name>/``; refuses to overwrite an existing folder."""
    root = Path(directory).expanduser() / f"palr-{name}"
    files = plugin_files(name)
    if root.exists():
        raise FileExistsError(f"{root} already exists; choose another name or --directory")
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
