"""Built-in plugin palr_bert4rec (work in progress: registers nothing yet)."""
