"""Built-in plugin: the ``bert4rec`` retriever (bidirectional cloze training, Sun et al. 2019)."""

from palr_core import hookimpl

from .model import BERT4RecConfig, BERT4RecRetriever


@hookimpl
def register_retrievers(register):
    register("bert4rec", BERT4RecRetriever, config=BERT4RecConfig)
