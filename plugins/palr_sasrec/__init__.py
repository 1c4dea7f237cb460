"""Built-in plugin palr_sasrec (work in progress: registers nothing yet)."""
