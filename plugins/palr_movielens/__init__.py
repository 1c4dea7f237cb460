"""Built-in plugin palr_movielens (work in progress: registers nothing yet)."""
