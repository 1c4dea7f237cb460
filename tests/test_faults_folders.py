"""A run or sweep folder palr cannot make or write is refused in one line naming the setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.test_cli import palr_run


def refused(proc, says: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr.replace("palr:", ""), proc.stderr
    assert proc.stderr.strip().splitlines() == [says], proc.stderr


def test_a_run_folder_below_a_file_is_refused_naming_the_setting(tmp_path):
    (tmp_path / "hostname").write_text("box\n")
    proc = palr_run(f"hydra.run.dir={tmp_path}/hostname/x", tmp_path=tmp_path, check=False)
    refused(proc, f"palr: hydra.run.dir={tmp_path}/hostname/x: {tmp_path}/hostname is a file; "
                  "expected a folder palr can write the run into")


def test_a_run_folder_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "hostname").write_text("box\n")
    proc = palr_run(f"hydra.run.dir={tmp_path}/hostname", tmp_path=tmp_path, check=False)
    refused(proc, f"palr: hydra.run.dir={tmp_path}/hostname: it is a file; "
                  "expected a folder palr can write the run into")
    assert (tmp_path / "hostname").read_text() == "box\n"


def test_a_sweep_folder_below_a_file_is_refused(tmp_path):
    (tmp_path / "hostname").write_text("box\n")
    proc = palr_run("-m", "seed=1,2", f"hydra.sweep.dir={tmp_path}/hostname/${{now:%H}}", tmp_path=tmp_path,
                    check=False)
    refused(proc, f"palr: hydra.sweep.dir={tmp_path}/hostname/${{now:%H}}: {tmp_path}/hostname is a file; "
                  "expected a folder palr can write the run into")


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux's read-only /sys")
def test_a_run_folder_in_a_read_only_place_is_refused(tmp_path):
    proc = palr_run("hydra.run.dir=/sys/palr-run", tmp_path=tmp_path, check=False)  # read-only even for root
    refused(proc, "palr: hydra.run.dir=/sys/palr-run: cannot write in /sys (Permission denied); "
                  "expected a folder palr can write the run into")


def test_a_read_only_run_folder_is_refused(tmp_path, read_only):
    folder = tmp_path / "run"
    folder.mkdir()
    read_only(folder)
    proc = palr_run(f"hydra.run.dir={folder}", tmp_path=tmp_path, check=False)
    why = "Permission denied" if os.geteuid() else "Read-only file system"
    refused(proc, f"palr: hydra.run.dir={folder}: cannot write in {folder} ({why}); "
                  "expected a folder palr can write the run into")
