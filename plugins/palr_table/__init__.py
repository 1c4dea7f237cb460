"""Built-in plugin: the ``table`` dataset, a user's own CSV/TSV/Parquet log and item file."""

from palr_core import hookimpl

from .dataset import TableConfig, TableDataset


@hookimpl
def register_datasets(register):
    register("table", TableDataset, config=TableConfig)
