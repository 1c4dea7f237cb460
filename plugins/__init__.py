"""palr's built-in plugins, one package each (``palr.plugins.<name>``).

They register through the ``palr`` entry-point group exactly as a third-party distribution does,
and import only what a third party could: ``palr_core`` and ``palr_core.kit``. Living inside
palr's own namespace, they never take a top-level name (``palr_gru4rec``) that a third party
may want for its own distribution.
"""
