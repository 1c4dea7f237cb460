"""Built-in plugin: the ``bpr`` retriever (matrix factorisation with the BPR loss, Rendle et al. 2009)."""

from palr_core import hookimpl

from .config import BPRConfig

PALR_PLUGIN_API = 3


@hookimpl
def register_retrievers(register):
    register("bpr", "palr.plugins.bpr.model:BPRRetriever", config=BPRConfig)
