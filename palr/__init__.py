"""palr from Python: ``palr.run(overrides)`` runs an experiment as ``palr-run`` does, and
``palr.load_run(run_dir)`` gives a finished run's models, ready to recommend.

The framework and the plugin contract live in :mod:`palr_core`; this package is the short name
for notebooks and scripts.
"""

from palr_core import __version__
from palr_core.api import LoadedRun, Recommendation, RunResult, compose, load_run, run

__all__ = ["run", "compose", "load_run", "LoadedRun", "Recommendation", "RunResult", "__version__"]
