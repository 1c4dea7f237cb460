"""Built-in plugin: the ``table`` dataset, a user's own CSV/TSV/Parquet log and item file."""

from palr_core import hookimpl

from .config import TableConfig

PALR_PLUGIN_API = 3


@hookimpl
def register_datasets(register):
    register("table", "palr.plugins.table.dataset:TableDataset", config=TableConfig)
