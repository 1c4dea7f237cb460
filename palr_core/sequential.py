"""Plugin API 1's name for :mod:`palr_core.kit.retrievers` (deprecated: import from there)."""

import warnings

from .kit.retrievers import *  # noqa: F401,F403  (the whole public API of the module it became)
from .kit.retrievers import __all__  # noqa: F401

warnings.warn("palr_core.sequential moved to palr_core.kit.retrievers in palr plugin API 2; import it from there",
              DeprecationWarning, stacklevel=2)
