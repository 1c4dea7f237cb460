"""Built-in plugin: the embedded ``synthetic`` dataset (palr-run's default)."""

from palr_core import hookimpl

from .dataset import SyntheticConfig, SyntheticMovies

PALR_PLUGIN_API = 3


@hookimpl
def register_datasets(register):
    register("synthetic", SyntheticMovies, config=SyntheticConfig)
