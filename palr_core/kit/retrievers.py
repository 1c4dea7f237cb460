"""Shared machinery for trained retrievers: batching, Lightning training, scoring, top-K, save/load.

A retriever plugin subclasses :class:`TrainedRetriever` (the palr side: ``fit``/``retrieve``/
``save``/``load``) and :class:`RetrieverModule` (the Lightning side: a loss in ``training_step`` and
``score(queries) -> [B, num_items]``). Everything else is shared: left-padded batches
(:func:`left_pad`; :func:`right_pad` for RNNs that pack sequences), early stopping on validation
NDCG@10 over the full catalogue with the history masked, best-checkpoint restore, resuming an
interrupted run from ``last.ckpt``, CPU/GPU/DDP via the ``trainer`` config group
(:func:`palr_core.kit.make_trainer`), length-bucketed batches, and batched :meth:`retrieve`.
``docs/plugins.md`` has a complete retriever built on it.

Item ids are ``0..num_items-1`` everywhere in palr; inside a padded tensor they are shifted by
``+1`` so that :data:`PAD` (``0``) is padding.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import torch

from ..components import RunContext, TrainingData
from ..config import check_options
from ..result_files import check_weights, read_checkpoint
from .configs import RetrieverConfig
from .files import write_atomic
from .training import LengthBucketSampler, claim_folder, fit, make_trainer, resumable_loader

log = logging.getLogger("palr")

__all__ = [
    "PAD",
    "flatten_histories",
    "left_pad",
    "right_pad",
    "trim_padding",
    "mask_history",
    "rank_from_scores",
    "LengthBucketSampler",
    "RetrieverConfig",
    "RetrieverModule",
    "TrainedRetriever",
    "UserRetriever",
    "top_k_unseen",
    "TransformerEncoder",
    "interaction_keys",
    "sample_unseen",
]

#: the padding id inside padded batches (real items are shifted by +1)
PAD = 0

#: in ``<work_dir>/retriever/``: this run read its retriever from the store of trained stages
STORED = "stored.json"

#: most rounds of redrawing negatives that hit one of the user's training items (:func:`sample_unseen`)
MAX_REDRAWS = 50


def interaction_keys(train: Sequence[np.ndarray], num_items: int) -> torch.Tensor:
    """Sorted unique ``user * num_items + item`` of the training interactions (int64)."""
    users = np.repeat(np.arange(len(train), dtype=np.int64), [len(s) for s in train])
    items = np.concatenate(train).astype(np.int64) if len(train) else np.zeros(0, np.int64)
    return torch.from_numpy(np.unique(users * num_items + items))


def sample_unseen(users: torch.Tensor, keys: torch.Tensor, num_items: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Items drawn uniformly from those each user has no training interaction with.

    ``users``: ``[B]``; ``shape``: ``(B,)`` or ``(B, n)``; ``keys``: :func:`interaction_keys`. A draw that
    hits a training item is redrawn (at most :data:`MAX_REDRAWS` rounds).
    """
    negatives = torch.randint(0, num_items, shape, device=users.device)
    if not len(keys):
        return negatives
    base = (users.long() * num_items).view(-1, *([1] * (len(shape) - 1)))
    for _ in range(MAX_REDRAWS):
        query = base + negatives
        found = keys[torch.searchsorted(keys, query).clamp(max=len(keys) - 1)] == query
        if not found.any():
            break
        negatives[found] = torch.randint(0, num_items, (int(found.sum()),), device=users.device)
    return negatives


def flatten_histories(histories: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """All histories' items in one int64 array, and each history's length (one ``np.concatenate``,
    no Python loop over the items)."""
    lengths = np.fromiter(map(len, histories), dtype=np.int64, count=len(histories))
    if not lengths.sum():
        return np.zeros(0, np.int64), lengths
    return np.concatenate([np.asarray(h, dtype=np.int64).reshape(-1) for h in histories]), lengths


def _tails(histories: Sequence[Sequence[int]], maxlen: int):
    """For the last ``maxlen`` items of each history: (row, position within the tail, tail length)
    per kept item, and the kept items (shifted by +1)."""
    flat, lengths = flatten_histories(histories)
    kept = np.minimum(lengths, max(maxlen, 0))
    rows = np.repeat(np.arange(len(lengths)), kept)
    position = np.arange(int(kept.sum())) - np.repeat(np.cumsum(kept) - kept, kept)
    source = np.repeat(np.cumsum(lengths) - kept, kept) + position
    return rows, position, np.repeat(kept, kept), flat[source] + 1


def left_pad(histories: Sequence[Sequence[int]], maxlen: int) -> torch.Tensor:
    """The last ``maxlen`` items of each history, shifted by +1, right-aligned, ``0``-padded on the left.

    The most recent item is always in the last column, so position ``maxlen - 1`` means "now".
    """
    out = np.zeros((len(histories), max(maxlen, 0)), dtype=np.int64)
    rows, position, kept, items = _tails(histories, maxlen)
    out[rows, maxlen - kept + position] = items
    return torch.from_numpy(out)


def right_pad(histories: Sequence[Sequence[int]], maxlen: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The last ``maxlen`` items of each history, shifted by +1, left-aligned and ``0``-padded on the
    right, with each row's length: the layout ``torch.nn.utils.rnn.pack_padded_sequence`` takes
    (an empty history has length 0; pack needs lengths >= 1, so clamp or drop such rows).
    """
    out = np.zeros((len(histories), max(maxlen, 0)), dtype=np.int64)
    rows, position, _, items = _tails(histories, maxlen)
    out[rows, position] = items
    lengths = np.bincount(rows, minlength=len(histories)).astype(np.int64)
    return torch.from_numpy(out), torch.from_numpy(lengths)


def mask_history(scores: torch.Tensor, histories: Sequence[Iterable[int]]) -> torch.Tensor:
    """Set the scores of items a user has already seen to ``-inf`` (in place; returns ``scores``)."""
    histories = [h if hasattr(h, "__len__") else list(h) for h in histories]
    flat, lengths = flatten_histories(histories)
    if len(flat):
        rows = torch.from_numpy(np.repeat(np.arange(len(lengths)), lengths)).to(scores.device)
        scores[rows, torch.from_numpy(flat).to(scores.device)] = float("-inf")
    return scores


def rank_from_scores(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among all items: items scoring higher, plus ties other than
    itself (so a constant model ranks every target last, never first)."""
    targets = targets.to(scores.device).long()
    target_scores = scores.gather(1, targets[:, None])
    higher = (scores > target_scores).sum(1)
    ties = (scores == target_scores).sum(1) - 1
    return (higher + ties).float()


def trim_padding(*seqs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Drop the leading columns that are padding in every row of the first tensor (from all tensors).

    Short histories then cost short attention: the most recent item stays in the last column.
    """
    used = (seqs[0] != PAD).any(0).nonzero()
    start = int(used[0]) if len(used) else seqs[0].shape[1] - 1
    return tuple(s[:, start:] for s in seqs)


def top_k_unseen(scores: torch.Tensor, histories: Sequence[Sequence[int]], k: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` (indices, scores) per row after masking each row's history (``k`` capped at the catalogue)."""
    scores = mask_history(scores.float(), histories)
    top = scores.topk(min(k, scores.shape[1]), dim=1)
    return top.indices, top.values


class TransformerEncoder(torch.nn.Module):
    """Pre-norm transformer blocks on ``F.scaled_dot_product_attention``, for sequence retrievers.

    Unlike ``torch.nn.TransformerEncoderLayer`` it applies no dropout to the attention weights:
    on CPU that dropout (a Bernoulli draw per ``B x heads x L x L`` weight) cost more than the rest of
    the block at SASRec sizes; dropout stays on the residual branches.
    """

    def __init__(self, hidden: int, heads: int, blocks: int, dropout: float) -> None:
        super().__init__()
        nn = torch.nn
        self.heads = heads
        self.blocks = nn.ModuleList(
            nn.ModuleDict({
                "norm1": nn.LayerNorm(hidden), "qkv": nn.Linear(hidden, 3 * hidden),
                "out": nn.Linear(hidden, hidden), "norm2": nn.LayerNorm(hidden),
                "ffn": nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Dropout(dropout),
                                     nn.Linear(4 * hidden, hidden)),
            }) for _ in range(blocks))
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, L, hidden]``; ``allowed``: bool ``[B, 1, L, L]`` (query may attend to key)."""
        batch, length, hidden = x.shape
        for block in self.blocks:
            qkv = block["qkv"](block["norm1"](x)).view(batch, length, 3, self.heads, -1)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            attended = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
            x = x + self.dropout(block["out"](attended.transpose(1, 2).reshape(batch, length, hidden)))
            x = x + self.dropout(block["ffn"](block["norm2"](x)))
        return self.norm(x)


class RetrieverModule(L.LightningModule):
    """Base LightningModule: Adam, and validation NDCG@10/HR@10 over the full catalogue.

    Subclasses define ``training_step`` (returning the loss) and :meth:`score`. A validation batch
    is ``(queries, targets, users)``; ``self.val_histories[user]`` is masked before ranking.
    """

    def __init__(self, num_items: int, lr: float, weight_decay: float) -> None:
        super().__init__()
        self.num_items = num_items
        self.lr = lr
        self.weight_decay = weight_decay
        self.val_histories: list[np.ndarray] = []

    def score(self, queries: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, num_items]`` for a batch of queries (by default left-padded histories)."""
        raise NotImplementedError

    def validation_step(self, batch, batch_idx: int) -> None:
        queries, targets, users = batch
        scores = self.score(queries).float()
        mask_history(scores, [self.val_histories[u] for u in users.tolist()])
        ranks = rank_from_scores(scores, targets)
        hit = ranks < 10
        ndcg = torch.where(hit, 1.0 / torch.log2(ranks + 2.0), torch.zeros_like(ranks))
        size = len(targets)
        self.log("val/NDCG@10", ndcg.mean(), sync_dist=True, batch_size=size, prog_bar=True)
        self.log("val/HR@10", hit.float().mean(), sync_dist=True, batch_size=size)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)


class TrainedRetriever:
    """Base Retriever: Lightning training with early stopping, batched top-K, save/load.

    A subclass sets ``config_class`` and implements :meth:`build_module` and
    :meth:`training_dataset`; it may override :meth:`queries` (default: left-padded histories)
    and :meth:`extra_state`/:meth:`restore_extra_state` for non-parameter state it needs.
    """

    config_class: ClassVar[type[RetrieverConfig]] = RetrieverConfig

    def __init__(self, **params: Any) -> None:
        self.config = self.config_class(**params)
        check_options(self.config, "retriever")  # also when built directly, not from a palr config
        self.module: RetrieverModule | None = None
        self.num_items: int | None = None
        self.fit_summary: dict[str, Any] = {}

    # -- what a model provides -------------------------------------------------------------
    def build_module(self, num_items: int) -> RetrieverModule:
        raise NotImplementedError

    def training_dataset(self, data: TrainingData, context: RunContext) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def queries(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """What :meth:`RetrieverModule.score` reads for these histories."""
        return left_pad(histories, self.config.maxlen)

    def row_lengths(self, dataset: torch.utils.data.Dataset) -> torch.Tensor | None:
        """Per training row, how much of it is not padding, to batch similar lengths together
        (:class:`LengthBucketSampler`, when ``config.length_buckets``); ``None``: plain shuffling."""
        return None

    def prepare(self, data: TrainingData) -> None:
        """Hook run before the module is built (e.g. a graph from the training data)."""

    def extra_state(self) -> dict[str, Any]:
        return {}

    def restore_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # -- the Retriever protocol ------------------------------------------------------------
    def fit(self, data: TrainingData, context: RunContext, *, callbacks: Sequence = ()) -> None:
        """Train with early stopping on validation NDCG@10, resuming ``last.ckpt`` if a previous
        fit in the same ``work_dir`` was interrupted, then restore the best checkpoint."""
        if self.config.load_from:
            self._load_into(Path(self.config.load_from))
            log.info("retriever loaded from %s (no training)", self.config.load_from)
            return
        stored = Path(context.work_dir) / "retriever"
        if (stored / STORED).is_file():  # this run read its retriever from the store: the copy it kept
            self._load_into(stored)
            summary = stored / "fit_summary.json"
            self.fit_summary = json.loads(summary.read_text()) if summary.is_file() else {}
            log.info("retriever: %s holds the stored training this run read; it is used", stored)
            return
        self.num_items = data.num_items
        self.prepare(data)
        self.module = self.build_module(data.num_items)
        self.module.val_histories = list(data.train)
        work_dir = Path(context.work_dir) / "retriever_training"
        claim_folder(work_dir, self._fingerprint(data, context), f"retriever {type(self).__name__}")
        done = work_dir / "done.json"
        finished = done.is_file()
        if finished:  # this folder's training finished: its best checkpoint, no training again
            self.fit_summary = json.loads(done.read_text())
            self._load_checkpoint(work_dir / "checkpoints" / self.fit_summary["best_checkpoint"])
            log.info("retriever: training in %s had finished; its best checkpoint is used", work_dir)
        else:
            loader = self._train_loader(data, context)
            trainer = make_trainer(context.trainer, work_dir, max_epochs=self.config.max_epochs,
                                   patience=self.config.patience or 0, monitor="val/NDCG@10",
                                   callbacks=list(callbacks), log_every_n_steps=max(1, min(50, len(loader))))
            resumed = fit(trainer, self.module, loader, self._val_loader(data, context))
            if resumed:
                log.info("retriever: resumed the interrupted training from %s", resumed)
            self._restore_best(trainer)
            if trainer.is_global_zero and self.fit_summary and self.fit_summary["stopped_by"] != "interrupted":
                write_atomic(done, json.dumps({**self.fit_summary, "resumed_from": resumed}, indent=1))
        self.module.cpu()
        saved = Path(context.work_dir) / "retriever" / "retriever.pt"
        if self.config.save and not (finished and saved.is_file()):  # a finished run's folder is only read
            self.save(saved.parent)

    def is_trained(self, context: RunContext) -> bool:
        """Whether ``context.work_dir`` holds this retriever's finished training (or the copy of a
        stored one, :meth:`restore`; or it loads another run's, ``load_from``), so that :meth:`fit`
        loads instead of training."""
        work_dir = Path(context.work_dir)
        return (bool(self.config.load_from) or (work_dir / "retriever_training" / "done.json").is_file()
                or (work_dir / "retriever" / STORED).is_file())

    # -- the store of trained stages (palr_core.Storable) -------------------------------------
    def stage_key(self, data: TrainingData, context: RunContext) -> dict:
        """What a fit on ``data`` depends on (the training folder's fingerprint): the model class,
        its options (``OUTSIDE_STAGE_KEY`` left out), the training data, the seed and the trainer
        settings that change results."""
        return self._fingerprint(data, context)

    def restore(self, folder: Path, context: RunContext) -> None:
        """Become the retriever :meth:`save` wrote into ``folder`` (a store entry), and copy it to
        ``<work_dir>/retriever`` as :meth:`fit` writes it, so the run folder can be read back
        (``palr.load_run``, ``palr recommend``) and resumed without the store."""
        folder = Path(folder)
        self._load_into(folder)
        summary = folder / "fit_summary.json"
        self.fit_summary = json.loads(summary.read_text()) if summary.is_file() else {}
        saved = Path(context.work_dir) / "retriever"
        saved.mkdir(parents=True, exist_ok=True)
        for name in ("retriever.pt", "config.json", "fit_summary.json"):
            if (folder / name).is_file():
                write_atomic(saved / name, (folder / name).read_bytes())
        write_atomic(saved / STORED, json.dumps({"entry": str(folder)}, indent=1))

    def retrieve(self, histories: Sequence[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ids and scores per history over the whole catalogue, history items excluded."""
        scores_out, ids_out = [], []
        for start in range(0, len(histories), self.config.eval_batch_size):
            chunk = histories[start:start + self.config.eval_batch_size]
            ids, scores = top_k_unseen(self.score(chunk), chunk, k)
            ids_out.append(ids.cpu().numpy())
            scores_out.append(scores.cpu().numpy())
        if not ids_out:
            return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
        return np.concatenate(ids_out), np.concatenate(scores_out)

    @torch.no_grad()
    def score(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        """Full-catalogue scores ``[len(histories), num_items]`` (history not masked)."""
        if self.module is None:
            raise RuntimeError(f"{type(self).__name__}: call fit() or load() before retrieve()")
        self.module.eval()
        queries = self.queries(histories).to(self.module.device)
        return self.module.score(queries).float()

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: Path) -> Path:
        """Write the config, parameters and extra state to ``path/retriever.pt``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {"class": f"{type(self).__module__}.{type(self).__qualname__}",
                 "config": dataclasses.asdict(self.config), "num_items": self.num_items,
                 "state_dict": self.module.state_dict(), "extra": self.extra_state()}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        write_atomic(path / "retriever.pt", buffer.getvalue())
        write_atomic(path / "config.json", json.dumps(state["config"], indent=2))
        if self.fit_summary:
            write_atomic(path / "fit_summary.json", json.dumps(self.fit_summary, indent=1, default=str))
        return path / "retriever.pt"

    @classmethod
    def load(cls, path: Path) -> TrainedRetriever:
        """A retriever saved by :meth:`save`, ready to ``retrieve`` (``path``: the directory)."""
        config = _read_state(Path(path))["config"]
        config.update(load_from=None)
        obj = cls(**config)
        obj._load_into(Path(path))
        return obj

    def _load_into(self, path: Path) -> None:
        state = _read_state(path)
        if isinstance(state["num_items"], bool) or not isinstance(state["num_items"], int) or state["num_items"] < 1:
            raise ValueError(f"{path / 'retriever.pt'}: num_items must be a whole number >= 1, got "
                             f"{state['num_items']!r}; expected a retriever saved by palr")
        self.num_items = state["num_items"]
        self.restore_extra_state(state["extra"])
        self.module = self.build_module(self.num_items)
        check_weights(path / "retriever.pt", state["state_dict"], self.module)
        self.module.load_state_dict(state["state_dict"])

    # -- helpers ---------------------------------------------------------------------------
    def _train_loader(self, data: TrainingData, context: RunContext):
        dataset = self.training_dataset(data, context)
        lengths = self.row_lengths(dataset) if self.config.length_buckets else None
        if lengths is None:  # equal lengths: a plain shuffle, still drawn from (seed, epoch)
            lengths = np.zeros(len(dataset), dtype=np.int64)
        seed = int(context.rng("retriever batches").integers(2**31))
        sampler = LengthBucketSampler(lengths, self.config.batch_size, seed=seed)
        return resumable_loader(dataset, self.config.batch_size, sampler, context.trainer.num_workers)

    def _val_loader(self, data: TrainingData, context: RunContext):
        # users ordered by history length: trimmed validation batches carry little padding
        users = torch.from_numpy(np.argsort([len(h) for h in data.train], kind="stable"))
        dataset = torch.utils.data.TensorDataset(
            self.queries([data.train[u] for u in users.tolist()]),
            torch.as_tensor(np.asarray(data.valid), dtype=torch.long)[users], users)
        return torch.utils.data.DataLoader(dataset, batch_size=self.config.eval_batch_size)

    def _restore_best(self, trainer) -> None:
        callback = trainer.checkpoint_callback
        best = getattr(callback, "best_model_path", "") if callback else ""
        if best and Path(best).is_file():
            self._load_checkpoint(Path(best))
            epochs, score, reason = _fit_outcome(trainer, callback)
            self.fit_summary = {"best_checkpoint": Path(best).name, "best_val_ndcg10": score, "epochs": epochs,
                                "stopped_by": reason}
            log.info("retriever training stopped by %s after %d epochs; best val NDCG@10 %.4f", reason, epochs, score)

    def _load_checkpoint(self, path: Path) -> None:
        """The module's weights from a Lightning checkpoint (``weights_only``: no code runs); a
        damaged file, or one of another model, is refused in one line naming it."""
        checkpoint = _safe_load(path, needs=("state_dict",))
        check_weights(path, checkpoint["state_dict"], self.module)
        self.module.load_state_dict(checkpoint["state_dict"])

    def _fingerprint(self, data: TrainingData, context: RunContext) -> dict:
        """What this folder's checkpoints depend on: the model, its settings, the data, seed and trainer."""
        digest = hashlib.sha256()
        for array in (*data.train, np.asarray(data.valid)):
            digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes() + b"|")
        outside = getattr(self.config, "OUTSIDE_STAGE_KEY", ("save", "load_from"))
        config = {k: v for k, v in dataclasses.asdict(self.config).items() if k not in outside}
        trainer = context.trainer.results_settings()
        return {"model": f"{type(self).__module__}.{type(self).__qualname__}", "config": config,
                "num_items": data.num_items, "data": digest.hexdigest(), "seed": context.seed, "trainer": trainer}


def _fit_outcome(trainer, callback) -> tuple[int, float, str]:
    """Epochs trained, the best validation score and :func:`_stop_reason`, from the trainer; or,
    when the training ran in spawned processes (``ddp_spawn``: Lightning hands back the weights and
    the best checkpoint's path, not the loops' or callbacks' state), from its ``last.ckpt``."""
    if callback.best_model_score is not None or trainer.current_epoch > 0:
        return trainer.current_epoch, float(callback.best_model_score or 0.0), _stop_reason(trainer)
    last = Path(callback.dirpath or "") / "last.ckpt"
    if not last.is_file():
        return trainer.current_epoch, 0.0, _stop_reason(trainer)
    saved = torch.load(last, map_location="cpu", weights_only=True)
    states = saved.get("callbacks", {})
    score = states.get(callback.state_key, {}).get("best_model_score")
    stopper = trainer.early_stopping_callback
    stopped = states.get(stopper.state_key, {}).get("stopped_epoch", 0) if stopper is not None else 0
    epochs = int(saved.get("epoch", -1)) + 1
    reason = ("early_stopping" if stopped else
              "max_epochs" if trainer.max_epochs is not None and 0 <= trainer.max_epochs <= epochs else "max_time")
    return epochs, float(score or 0.0), reason


def _stop_reason(trainer) -> str:
    """Why ``trainer.fit`` returned: ``early_stopping``, ``max_epochs``, ``max_time`` (the trainer's
    wall-clock cap) or ``interrupted`` (Ctrl-C: Lightning returns with the checkpoints so far)."""
    stopper = trainer.early_stopping_callback
    if stopper is not None and stopper.stopped_epoch > 0:
        return "early_stopping"
    if trainer.max_epochs is not None and 0 <= trainer.max_epochs <= trainer.current_epoch:
        return "max_epochs"
    return "interrupted" if trainer.interrupted else "max_time"


def _read_state(path: Path) -> dict:
    file = path / "retriever.pt"
    if not file.is_file():
        raise FileNotFoundError(f"no saved retriever at {file} (expected a directory written by "
                                f"retriever.save(), e.g. <previous run>/retriever)")
    return _safe_load(file, needs=("config", "num_items", "state_dict", "extra"))


def _safe_load(file: Path, needs: tuple[str, ...] = ()) -> dict:
    """``torch.load`` with ``weights_only=True``: tensors and plain data only, so a crafted file
    cannot run code; that, an empty or truncated file, or one without the keys in ``needs``, is
    refused in one line naming the file (a ``ValueError``: :func:`palr_core.result_files.read_checkpoint`)."""
    return read_checkpoint(file, needs)


class UserRetriever(TrainedRetriever):
    """Base for transductive retrievers: models with a parameter per training user (BPR-MF, NeuMF,
    LightGCN, Caser's user embedding).

    :meth:`prepare` indexes the training prefixes (:meth:`index_users`; extend it, calling
    ``super()``, to build per-user structures such as a graph). :meth:`queries` gives
    ``[user, left-padded history]`` rows: ``user`` is the training user whose prefix the history
    is, optionally followed by one more item (the validation item at test time), else ``-1`` (the
    module folds such a history in its own way). The prefixes are saved with the model, so a
    loaded model recognises its users. :meth:`interaction_dataset` is the usual one
    ``(user, item)`` row per training interaction.
    """

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.train_prefixes: list[np.ndarray] = []
        self._user_of: dict[bytes, int] = {}

    @property
    def num_users(self) -> int:
        return len(self.train_prefixes)

    def prepare(self, data: TrainingData) -> None:
        self.index_users(list(data.train), data.num_items)

    def index_users(self, train: Sequence[np.ndarray], num_items: int) -> None:
        """Remember the training prefixes (user ``u`` is ``train[u]``)."""
        self.train_prefixes = [np.asarray(s, dtype=np.int64) for s in train]
        self._user_of = {}
        for user, seq in enumerate(self.train_prefixes):
            self._user_of.setdefault(seq.tobytes(), user)

    def known_user(self, history: np.ndarray) -> int:
        """The training user whose prefix is ``history``, or all of it but its last item; ``-1``: none."""
        history = np.asarray(history, dtype=np.int64)
        for candidate in (history, history[:-1]):
            user = self._user_of.get(candidate.tobytes())
            if user is not None:
                return user
        return -1

    def queries(self, histories: Sequence[np.ndarray]) -> torch.Tensor:
        users = torch.tensor([self.known_user(h) for h in histories], dtype=torch.long)
        return torch.cat([users[:, None], left_pad(histories, self.config.maxlen)], dim=1)

    def interaction_dataset(self, data: TrainingData) -> torch.utils.data.TensorDataset:
        """One ``(user, item)`` row per training interaction."""
        users = np.repeat(np.arange(len(data.train)), [len(s) for s in data.train])
        items = np.concatenate(data.train).astype(np.int64) if len(data.train) else np.zeros(0, np.int64)
        return torch.utils.data.TensorDataset(torch.from_numpy(users), torch.from_numpy(items))

    def extra_state(self) -> dict[str, Any]:
        lengths = [len(s) for s in self.train_prefixes]
        flat = np.concatenate(self.train_prefixes) if self.train_prefixes else np.zeros(0, np.int64)
        return {"train_items": torch.from_numpy(flat), "train_lengths": torch.tensor(lengths, dtype=torch.long)}

    def restore_extra_state(self, state: dict[str, Any]) -> None:
        if "train" in state:  # saved by palr 0.2's LightGCN: one tensor per user
            train = [t.numpy() for t in state["train"]]
        else:
            flat, lengths = state["train_items"].numpy(), state["train_lengths"].numpy()
            train = np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []
        self.index_users(train, self.num_items)
