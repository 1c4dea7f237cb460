"""Built-in plugin: the ``gru4rec`` retriever (a GRU over the item sequence, Hidasi et al. 2016)."""

from palr_core import hookimpl

from .config import GRU4RecConfig

PALR_PLUGIN_API = 3


@hookimpl
def register_retrievers(register):
    register("gru4rec", "palr.plugins.gru4rec.model:GRU4RecRetriever", config=GRU4RecConfig)
