"""Built-in plugin: the ``bert4rec`` retriever (bidirectional cloze training, Sun et al. 2019)."""

from palr_core import hookimpl

from .config import BERT4RecConfig

PALR_PLUGIN_API = 3


@hookimpl
def register_retrievers(register):
    register("bert4rec", "palr.plugins.bert4rec.model:BERT4RecRetriever", config=BERT4RecConfig)
