"""Built-in plugin: the ``popularity`` retriever, the simplest Retriever there is."""

from palr_core import hookimpl

from .retriever import PopularityConfig, PopularityRetriever

PALR_PLUGIN_API = 3


@hookimpl
def register_retrievers(register):
    register("popularity", PopularityRetriever, config=PopularityConfig)
