"""Built-in plugin: the ``sasrec`` retriever (causal self-attention, Kang & McAuley 2018)."""

from palr_core import hookimpl

from .model import SASRecConfig, SASRecRetriever


@hookimpl
def register_retrievers(register):
    register("sasrec", SASRecRetriever, config=SASRecConfig)
