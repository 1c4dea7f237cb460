"""A checkpoint or saved retriever that palr did not write as it is (empty, torn, crafted, of
another model) is refused in one line naming the file and what was expected: on resume, when a
finished training's best checkpoint is read back, and for ``retriever.load_from``."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from palr.plugins.sasrec.model import SASRecRetriever

from palr_core.testing import tiny_context, tiny_data
from tests.test_cli import FAST, palr_run
from tests.test_faults import TINY, _Payload


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished SASRec training folder (``retriever_training/``) and saved retriever (``retriever/``)."""
    root = tmp_path_factory.mktemp("trained")
    context = tiny_context(root, catalog=tiny_data().catalog)
    SASRecRetriever(**TINY, max_epochs=1).fit(tiny_data().training, context)
    return context.work_dir


def resume_with(last: bytes, trained: Path, training_data, run_context) -> str:
    """Plant ``last`` as an interrupted training's last.ckpt and start the same training again."""
    folder = run_context.work_dir / "retriever_training"
    shutil.copytree(trained / "retriever_training", folder)
    (folder / "done.json").unlink()  # not finished: the fit resumes last.ckpt
    (folder / "checkpoints" / "last.ckpt").write_bytes(last)
    with pytest.raises(ValueError) as caught:
        SASRecRetriever(**TINY, max_epochs=1).fit(training_data, run_context)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def whole(trained: Path) -> bytes:
    return (trained / "retriever_training" / "checkpoints" / "last.ckpt").read_bytes()


def saved_with(trained: Path, **changes) -> bytes:
    state = torch.load(trained / "retriever_training" / "checkpoints" / "last.ckpt", weights_only=True)
    state.update(changes)
    path = trained / "edited.ckpt"
    torch.save(state, path)
    return path.read_bytes()


@pytest.mark.parametrize(("make", "says"), [
    (lambda t: b"", "last.ckpt is empty; expected a checkpoint palr wrote"),
    (lambda t: whole(t)[: len(whole(t)) // 2], "last.ckpt cannot be read, truncated or damaged? ("),
    (lambda t: b"\x00garbage" * 100, "last.ckpt holds something other than weights and plain data, and was not "
                                        "loaded (torch.load weights_only=True refused it: Unsupported operand 0)"),
    (lambda t: pickle.dumps(_Payload(t / "pwned")), "last.ckpt holds something other than weights and plain data"),
    (lambda t: _without(t, "loops"), "last.ckpt has no 'loops'; expected a checkpoint"),
    (lambda t: saved_with(t, state_dict={"item_emb.weight": torch.zeros(3, 2)}),
     "last.ckpt: weight 'item_emb.weight' is not one of the model's; expected weights of this"),
])
def test_a_bad_last_ckpt_on_resume_is_one_line_naming_it(trained, training_data, run_context, make, says):
    message = resume_with(make(trained), trained, training_data, run_context)
    last = run_context.work_dir / "retriever_training" / "checkpoints" / "last.ckpt"
    assert message.startswith(str(last)) and says in message, message
    assert not (trained / "pwned").exists()


def _without(trained: Path, key: str) -> bytes:
    state = torch.load(trained / "retriever_training" / "checkpoints" / "last.ckpt", weights_only=True)
    del state[key]
    torch.save(state, trained / "edited.ckpt")
    return (trained / "edited.ckpt").read_bytes()


def test_weights_of_another_shape_in_last_ckpt_are_named(trained, training_data, run_context):
    state = torch.load(trained / "retriever_training" / "checkpoints" / "last.ckpt", weights_only=True)
    name, tensor = next(iter(state["state_dict"].items()))
    state["state_dict"][name] = torch.zeros(tensor.shape[0] + 1, *tensor.shape[1:])
    torch.save(state, trained / "edited.ckpt")
    message = resume_with((trained / "edited.ckpt").read_bytes(), trained, training_data, run_context)
    assert f"weight {name!r} is ({tensor.shape[0] + 1}, " in message and "the model's is" in message


def test_a_torn_best_checkpoint_of_a_finished_training_is_one_line(trained, training_data, run_context):
    folder = run_context.work_dir / "retriever_training"
    shutil.copytree(trained / "retriever_training", folder)
    best = folder / "checkpoints" / json.loads((folder / "done.json").read_text())["best_checkpoint"]
    best.write_bytes(best.read_bytes()[:1000])
    with pytest.raises(ValueError, match=rf"^{best}: cannot be read|^{best} cannot be read, truncated or damaged"):
        SASRecRetriever(**TINY, max_epochs=1).fit(training_data, run_context)


@pytest.mark.parametrize(("edit", "says"), [
    (lambda p: p.write_bytes(b""), "retriever.pt is empty; expected a checkpoint palr wrote"),
    (lambda p: p.write_bytes(p.read_bytes()[:500]), "retriever.pt cannot be read, truncated or damaged? ("),
    (lambda p: torch.save([1, 2], p), "retriever.pt holds list; expected a checkpoint palr wrote"),
    (lambda p: torch.save({"config": {}}, p), "retriever.pt has no 'num_items', 'state_dict', 'extra'"),
    (lambda p: torch.save({**torch.load(p, weights_only=True), "num_items": "many"}, p),
     "retriever.pt: num_items must be a whole number >= 1, got 'many'"),
])
def test_a_bad_saved_retriever_for_load_from_is_one_line(trained, training_data, run_context, tmp_path, edit, says):
    saved = Path(shutil.copytree(trained / "retriever", tmp_path / "saved"))
    edit(saved / "retriever.pt")
    with pytest.raises(ValueError) as caught:
        SASRecRetriever(**TINY, load_from=str(saved)).fit(training_data, run_context)
    assert str(caught.value).startswith(str(saved / "retriever.pt")) and says in str(caught.value), caught.value
    assert "\n" not in str(caught.value)


def test_palr_run_resuming_a_torn_last_ckpt_prints_one_line(tmp_path, monkeypatch):
    import palr

    run = tmp_path / "run"
    args = ("retriever=sasrec", "trainer.max_epochs=1", "eval.max_users=20", "retriever.hidden=16",
            "retriever.maxlen=20", "store.enabled=false", *(f"{g}={o}" for g, o in FAST.items() if g != "retriever"))
    # the finished run to tear, in this process; the resumed one is palr-run's own process
    monkeypatch.setenv("PALR_CACHE_DIR", str(tmp_path / "cache"))
    palr.run(list(args), run_dir=run)
    last = run / "retriever_training" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:2000])
    for stale in ("metrics.json", "retriever_training/done.json"):
        (run / stale).unlink()
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**record, "finished": False}))
    proc = palr_run(f"hydra.run.dir={run}", *args, tmp_path=tmp_path, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"palr: {last} cannot be read, truncated or damaged? (")



# -- LoRA adapters and saved models: safetensors and their JSON settings --------------------------
def safetensors_file(path: Path) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"lora_A": torch.zeros(4, 8), "lora_B": torch.ones(8, 4)}, str(path))
    (path.parent / "adapter_config.json").write_text('{"r": 4}')
    return path


@pytest.mark.parametrize(("edit", "says"), [
    (lambda p: p.write_bytes(b""), "adapter_model.safetensors: its header is cut short (0 bytes in all)"),
    (lambda p: p.write_bytes(p.read_bytes()[:-10]), "adapter_model.safetensors is 382 bytes, its header describes 392 (truncated?)"),
    (lambda p: p.write_bytes((5).to_bytes(8, "little") + b"{nope" + b"\0" * 10), "its header is not JSON"),
    (lambda p: p.write_bytes((2).to_bytes(8, "little") + b"[]"), "its header is an array; expected a safetensors"),
    (lambda p: (p.parent / "adapter_config.json").write_text("{"), "adapter_config.json: not valid JSON"),
    (lambda p: (p.parent / "adapter_config.json").write_text("[1]"), "adapter_config.json holds an array"),
])
def test_a_torn_or_crafted_adapter_is_named_before_a_library_reads_it(tmp_path, edit, says):
    from palr_core.result_files import ResultFileError, check_model_files

    file = safetensors_file(tmp_path / "run" / "llama_lora" / "adapter" / "adapter_model.safetensors")
    check_model_files(tmp_path / "run")  # whole: accepted
    edit(file)
    with pytest.raises(ResultFileError) as caught:
        check_model_files(tmp_path / "run")
    assert str(caught.value).startswith(str(file.parent)) and says in str(caught.value), caught.value
    assert "\n" not in str(caught.value)


#: a small LLM run: the tests below need its saved adapter, not what it learned
LLM_RUN = ("ranker=llama_lora", "retriever=popularity", "profile=none", "dataset.users=150", "eval.max_users=10",
           "eval.tune_users=20", "trainer.max_epochs=1", "ranker.tiny.hidden_size=32", "ranker.tiny.layers=1",
           "ranker.instructions.user_fraction=0.3")


@pytest.fixture(scope="module")
def llm_run(tmp_path_factory) -> Path:
    """Run in this process (``palr.run``, what ``palr-run`` runs): only the runs given the torn
    files below have to be processes of their own, for their exit code and last line."""
    import palr

    tmp = tmp_path_factory.mktemp("llm")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PALR_CACHE_DIR", str(tmp / "cache"))
        palr.run(list(LLM_RUN), run_dir=tmp / "run")
    return tmp / "run"


def _widened(data: bytes) -> bytes:
    """The same safetensors file with every tensor one row longer: a whole file, shapes that do not fit."""
    import safetensors.torch

    return safetensors.torch.save({k: torch.zeros(v.shape[0] + 1, *v.shape[1:]) for k, v in
                                   safetensors.torch.load(data).items()})


@pytest.mark.parametrize(("file", "content", "says"), [
    ("adapter_model.safetensors", lambda b: b[: len(b) // 2], "(truncated?); expected a safetensors file"),
    ("adapter_model.safetensors", _widened, "its weights do not fit the base model (size mismatch for "),
    ("adapter_config.json", lambda b: b"{\"r\": ", "adapter_config.json: not valid JSON"),
])
def test_palr_recommend_on_a_torn_adapter_is_one_line(llm_run, tmp_path, capsys, monkeypatch, file, content, says):
    from palr_core.cli import main

    run = Path(shutil.copytree(llm_run, tmp_path / "run", ignore=shutil.ignore_patterns(".palr.lock")))
    target = run / "llama_lora" / "adapter" / file
    target.write_bytes(content(target.read_bytes()))
    monkeypatch.setenv("PALR_CACHE_DIR", str(llm_run.parent / "cache"))
    code = main(["recommend", str(run), "-u", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"palr: {target}") and says in err, err


def test_palr_run_resuming_a_folder_with_a_torn_adapter_prints_one_line(llm_run, tmp_path):
    run = Path(shutil.copytree(llm_run, tmp_path / "run", ignore=shutil.ignore_patterns(".palr.lock")))
    (run / "metrics.json").unlink()
    (run / "run.json").write_text(json.dumps({**json.loads((run / "run.json").read_text()), "finished": False}))
    adapter = run / "llama_lora" / "adapter" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:100])
    proc = palr_run(f"hydra.run.dir={run}", *LLM_RUN, tmp_path=llm_run.parent, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"palr: {adapter}: its header is cut short"), proc.stderr


def test_a_torn_adapter_given_as_ranker_adapter_is_one_line_before_any_work(llm_run, tmp_path):
    """``ranker.adapter=<another run's llama_lora>`` is checked with the run's resources, before the
    data is read: a torn file there is named, not met by peft after the retriever has trained."""
    folder = Path(shutil.copytree(llm_run / "llama_lora", tmp_path / "llama_lora"))
    adapter = folder / "adapter" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:100])
    proc = palr_run(f"hydra.run.dir={tmp_path}/run", "ranker=llama_lora", f"ranker.adapter={folder}",
                    "eval.max_users=10", tmp_path=llm_run.parent, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"palr: ranker.adapter={str(folder)!r}: {adapter}: its header is cut short"), proc.stderr
    assert not (tmp_path / "run" / "dataset_stats.json").exists()
