"""Built-in plugin: the ``sasrec`` retriever (causal self-attention, Kang & McAuley 2018)."""

from palr_core import hookimpl

from .config import SASRecConfig

PALR_PLUGIN_API = 3


@hookimpl
def register_retrievers(register):
    register("sasrec", "palr.plugins.sasrec.model:SASRecRetriever", config=SASRecConfig)
