"""Built-in plugin: Amazon reviews 2014/2018 (``palr-run dataset=amazon-beauty dataset.root=<dir>``)."""

from palr_core import hookimpl

from .dataset import AmazonConfig, AmazonReviews


@hookimpl
def register_datasets(register):
    register("amazon", AmazonReviews, config=AmazonConfig)
