"""The ``ncf`` retriever's options (no torch: read when palr starts)."""

from __future__ import annotations

from dataclasses import dataclass

from palr_core import option
from palr_core.kit.configs import RetrieverConfig


@dataclass
class NCFConfig(RetrieverConfig):
    """NeuMF hyperparameters; shared ones (lr, batch_size, max_epochs, patience...) in RetrieverConfig.

    :param hidden: GMF embedding size (the GMF tower's predictive factors).
    :param mlp_layers: the MLP tower's layer sizes: the first is its input, the user and item MLP
        embeddings (``mlp_layers[0] / 2`` each, so it must be even) concatenated; each later size
        is a ReLU layer's output, the last one the MLP's predictive factors. At least two entries.
    :param num_negatives: negatives sampled per positive, among the items the user has not
        interacted with in training (redrawn every epoch).
    :param dropout: dropout on the input of each MLP hidden layer after the first (the paper: none).
    :param maxlen: most recent items of an unknown user's history used to fold it in.
    :param lr: Adam learning rate.
    :param batch_size: positive interactions per batch (each with ``num_negatives`` negatives).
    :param max_epochs: most training epochs (each training interaction once per epoch); early
        stopping on validation NDCG@10 usually ends training long before.
    """

    mlp_layers: list[int] = option([64, 32, 16], each_min=1, nonempty=True)
    num_negatives: int = option(4, min=1)
    # chosen by best validation NDCG@10 on ML-100K among the runs in benchmarks/results/retrievers.json
    dropout: float = option(0.2, min=0, below=1)
    lr: float = option(2e-3, above=0)
    batch_size: int = option(1024, min=1)
    max_epochs: int | None = option(200, min=1)

    def __post_init__(self) -> None:
        layers = self.mlp_layers
        if not isinstance(layers, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                            for v in layers):
            raise ValueError(f"retriever ncf: mlp_layers must be a list of integers, got {layers!r}")
        if len(layers) < 2:
            raise ValueError(f"retriever ncf: mlp_layers needs at least two sizes (the input and one "
                             f"hidden layer, e.g. [64, 32, 16]), got {list(layers)!r}")
        if layers[0] % 2:
            raise ValueError(f"retriever ncf: mlp_layers[0] ({layers[0]}) must be even: it is the user "
                             f"and item MLP embeddings concatenated, half each")
        self.mlp_layers = list(layers)
