"""Built-in plugin: the ``ncf`` retriever (NeuMF: GMF and MLP towers with a BCE loss, He et al. 2017)."""

from palr_core import hookimpl

from .config import NCFConfig

PALR_PLUGIN_API = 3


@hookimpl
def register_retrievers(register):
    register("ncf", "palr.plugins.ncf.model:NCFRetriever", config=NCFConfig)
