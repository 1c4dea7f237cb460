"""What determines a fine-tuning (its fingerprint: checkpoints and stored stages are keyed by
it), and the files of a finished one that the store of trained stages keeps."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from palr_core import RunContext, TrainingData

from .decoders import DECODER_OPTIONS

#: options that change how the model ranks or how its training is computed, not what it learns:
#: ranking-only options, ``pad_to_multiple_of`` (masked padding; like ``trainer.threads`` it may
#: differ between an interrupted run and its resumption) and the ignored ``cpu_kernels``
NOT_LEARNED = {"num_generate", "rank_batch_size", "num_beams", "retriever_weight", "retriever_weights",
               "auto_alpha", "adapter", "resume", "cpu_kernels", "pad_to_multiple_of"}

#: what of ``<work_dir>/llama_lora`` the store keeps: the adapter, the tiny base, the records
STORED = ("adapter", "base", "done.json", "fingerprint.json")


def fine_tuning_fingerprint(config, decoder, data: TrainingData, context: RunContext) -> dict:
    """The ranker's options that change what it learns (:data:`NOT_LEARNED` and the decoder options
    its decoder's fine-tuning does not read left out), the training data, the seed, the trainer
    settings that change results and the profile generator."""
    digest = hashlib.sha256()
    for array in (*data.train, np.asarray(data.valid)):
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes() + b"|")
    left_out = NOT_LEARNED | (DECODER_OPTIONS - decoder.fine_tuning_options)
    options = {k: v for k, v in dataclasses.asdict(config).items() if k not in left_out}
    profiles = context.profiles
    return {"config": options, "data": digest.hexdigest(), "seed": context.seed,
            "trainer": context.trainer.results_settings(),
            "profiles": None if profiles is None else [type(profiles).__qualname__,
                                                       repr(getattr(profiles, "config", None))]}


def catalog_digest(catalog) -> str:
    """sha256 of the catalogue's text: the tiny model's vocabulary and every prompt are made from it."""
    text = json.dumps([[str(i) for i in catalog.ids], [str(t) for t in catalog.titles], catalog.attributes,
                       catalog.domain, catalog.show_id], default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def copy_stage(source: Path, target: Path) -> None:
    """The :data:`STORED` files of a finished fine-tuning from ``source`` into ``target``
    (safetensors and JSON: nothing that runs code)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in STORED:
        if (source / name).is_dir():
            shutil.copytree(source / name, target / name, dirs_exist_ok=True)
        elif (source / name).is_file():
            shutil.copy2(source / name, target / name)
