"""Built-in plugin: MovieLens 100K/1M/20M/25M (``palr-run dataset=ml-1m dataset.root=<dir>``)."""

from palr_core import hookimpl

from .config import MovieLensConfig

PALR_PLUGIN_API = 3


@hookimpl
def register_datasets(register):
    register("movielens", "palr.plugins.movielens.dataset:MovieLens", config=MovieLensConfig)
