"""Config dataclasses of the toolkit's machinery, importable without torch (plugins register their
configs at start-up, and listing plugins or composing a config must stay fast)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import option

__all__ = ["RetrieverConfig"]


@dataclass
class RetrieverConfig:
    """Settings every trained retriever shares (a model's config dataclass extends this one).

    :param maxlen: most recent items a sequence model reads.
    :param hidden: embedding size.
    :param dropout: dropout rate.
    :param lr: Adam learning rate.
    :param weight_decay: Adam weight decay.
    :param batch_size: training batch size.
    :param eval_batch_size: users scored per batch in validation and :meth:`retrieve`.
    :param max_epochs: most training epochs (capped by ``trainer.max_epochs``; ``null``: no cap,
        early stopping or ``trainer.max_time`` ends training). Epochs are cheap: early stopping
        usually ends training long before.
    :param patience: validation checks without NDCG@10 improvement before stopping (0 or ``null``: off).
    :param load_from: directory of a retriever saved by an earlier run (``<run>/retriever``): load it
        instead of training.
    :param save: write the fitted retriever to ``<work_dir>/retriever`` so later runs can reuse it.
    :param length_buckets: batch training rows of similar length together (models that report
        :meth:`~palr_core.kit.TrainedRetriever.row_lengths`), so that trimmed batches carry less padding.
    """

    #: options that cannot change what ``fit`` trains: left out of the retriever's key in the store
    #: of trained stages (``TrainedRetriever.stage_key``) and of its training folder's fingerprint
    OUTSIDE_STAGE_KEY = ("load_from", "save")

    maxlen: int = option(50, min=1)
    hidden: int = option(64, min=1)
    dropout: float = option(0.2, min=0, below=1)
    lr: float = option(1e-3, above=0)
    weight_decay: float = option(0.0, min=0)
    batch_size: int = option(128, min=1)
    eval_batch_size: int = option(512, min=1)
    max_epochs: int | None = option(200, min=1)
    patience: int | None = option(10, min=0)
    load_from: str | None = None
    save: bool = True
    length_buckets: bool = True
