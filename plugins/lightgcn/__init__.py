"""Built-in plugin: the ``lightgcn`` retriever (graph propagation with BPR, He et al. 2020)."""

from palr_core import hookimpl

from .config import LightGCNConfig

PALR_PLUGIN_API = 3


@hookimpl
def register_retrievers(register):
    register("lightgcn", "palr.plugins.lightgcn.model:LightGCNRetriever", config=LightGCNConfig)
