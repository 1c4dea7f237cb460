"""Built-in plugin palr_table (work in progress: registers nothing yet)."""
