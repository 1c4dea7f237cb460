"""Built-in plugin: the ``caser`` retriever (convolutional sequence embedding, Tang & Wang 2018)."""

from palr_core import hookimpl

from .config import CaserConfig

PALR_PLUGIN_API = 3


@hookimpl
def register_retrievers(register):
    register("caser", "palr.plugins.caser.model:CaserRetriever", config=CaserConfig)
