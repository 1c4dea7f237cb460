"""Built-in plugin: Amazon reviews 2014/2018 (``palr-run dataset=amazon-beauty dataset.root=<dir>``)."""

from palr_core import hookimpl

from .config import AmazonConfig

PALR_PLUGIN_API = 3


@hookimpl
def register_datasets(register):
    register("amazon", "palr.plugins.amazon.dataset:AmazonReviews", config=AmazonConfig)
