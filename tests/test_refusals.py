"""palr-run refuses a mistyped command line in one named line, and leaves no folder behind."""

from __future__ import annotations

import pytest

from tests.test_cli import palr_run


@pytest.mark.parametrize(("args", "says"), [
    (["retriver=sasrec"], "palr: no setting or config group 'retriver' (did you mean 'retriever'?); groups: "),
    (["+retriver=sasrec"], "palr: no setting or config group 'retriver' (did you mean 'retriever'?)"),
    (["+foo=1"], "palr: no setting or config group 'foo'; groups: "),
    (["eval.max_user=5"], "palr: no eval setting 'eval.max_user' (did you mean 'eval.max_users'?); eval's settings: "),
    (["+eval.foo=1"], "palr: no eval setting 'eval.foo'; eval's settings: ks, candidates"),
    (["trainer.max_epoch=1"], "palr: no trainer setting 'trainer.max_epoch' (did you mean 'trainer.max_epochs'?)"),
    (["retriever.hiden=3"], "palr: retriever 'popularity' has no option retriever.hiden"),
    (["eval.candidates=0"], "palr: eval.candidates must be >= 1, got 0"),
    # values Hydra cannot take, and a syntax error: Hydra's own message, in one line
    (["eval.candidates=abc"], "palr: Error merging override eval.candidates=abc: Value 'abc' of type 'str' could "
                              "not be converted to Integer"),
    (["seed=1.5"], "palr: Error merging override seed=1.5: Value '1.5' of type 'float' could not be converted"),
    (["eval.ks=[1,"], "palr: no viable alternative at input '[1,'"),
    (["--config-dir=no-such-folder"], "palr: --config-dir=no-such-folder: the folder does not exist; expected a "
                                      "folder of your own presets"),
])
def test_a_mistyped_command_line_is_one_named_line_and_leaves_no_folder(tmp_path, args, says):
    proc = palr_run(*args, tmp_path=tmp_path, check=False)
    assert proc.returncode == 1
    assert says in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and "HYDRA_FULL_ERROR" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_typo_in_a_preset_names_the_preset_file(tmp_path):
    presets = tmp_path / "mine" / "retriever"
    presets.mkdir(parents=True)
    (presets / "small.yaml").write_text("defaults:\n  - sasrec\n  - _self_\n\nhiden: 16\n")
    proc = palr_run("--config-dir", str(tmp_path / "mine"), "retriever=small", tmp_path=tmp_path, check=False)
    assert proc.returncode == 1
    assert (f"palr: retriever preset {presets / 'small.yaml'}: retriever 'sasrec' has no option 'hiden' "
            "(did you mean 'hidden'?)") in proc.stderr, proc.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_refused_run_keeps_a_folder_that_holds_a_run(tmp_path):
    """Only Hydra's own files are removed with a refused run's folder: never another run's files."""
    folder = tmp_path / "kept"
    palr_run(f"hydra.run.dir={folder}", "eval.max_users=20", tmp_path=tmp_path)
    proc = palr_run(f"hydra.run.dir={folder}", "eval.max_users=20", "retriever.hiden=3", tmp_path=tmp_path,
                    check=False)
    assert proc.returncode == 1 and (folder / "metrics.json").is_file()


def test_a_preset_with_a_python_tag_is_refused_in_one_line_and_runs_nothing(tmp_path):
    presets = tmp_path / "mine" / "retriever"
    presets.mkdir(parents=True)
    marker = tmp_path / "pwned"
    (presets / "evil.yaml").write_text(f'defaults:\n  - sasrec\n  - _self_\n\nhidden: !!python/object/apply:os.system '
                                       f'["touch {marker}"]\n')
    proc = palr_run("--config-dir", str(tmp_path / "mine"), "retriever=evil", tmp_path=tmp_path, check=False)
    assert proc.returncode == 1 and not marker.exists()
    assert f"palr: retriever preset {presets / 'evil.yaml'}: not valid YAML: could not determine a constructor" in proc.stderr
    assert "Traceback" not in proc.stderr
