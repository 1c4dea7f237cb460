"""Built-in plugin palr_amazon (work in progress: registers nothing yet)."""
