"""Built-in plugin: MovieLens 100K/1M/20M/25M (``palr-run dataset=ml-1m dataset.root=<dir>``)."""

from palr_core import hookimpl

from .dataset import MovieLens, MovieLensConfig


@hookimpl
def register_datasets(register):
    register("movielens", MovieLens, config=MovieLensConfig)
