"""Built-in plugin palr_lightgcn (work in progress: registers nothing yet)."""
