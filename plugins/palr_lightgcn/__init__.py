"""Built-in plugin: the ``lightgcn`` retriever (graph propagation with BPR, He et al. 2020)."""

from palr_core import hookimpl

from .model import LightGCNConfig, LightGCNRetriever


@hookimpl
def register_retrievers(register):
    register("lightgcn", LightGCNRetriever, config=LightGCNConfig)
