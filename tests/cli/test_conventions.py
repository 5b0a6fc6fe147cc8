"""Command-line conventions: --version, bare ``mmfw``, closed pipes, data that is not silently replaced, and the
end of ``mmfw train`` saying where the results are and what to run next."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mmfw.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_version_names_mmfw_and_the_libraries_behind_numbers(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out.strip()
    assert re.fullmatch(r"mmfw \d+\.\d+\.\S+ \(torch \S+, transformers \S+, python \d+\.\d+\.\d+\)", out), out


def test_bare_mmfw_prints_the_help(capsys) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: mmfw")
    for command in ("train", "generate", "eval", "plot", "schema", "list"):
        assert re.search(rf"^\s+{command}\s", out, re.MULTILINE), command


@pytest.mark.parametrize("args", [["list"], ["schema"]])
def test_a_closed_pipe_ends_quietly(args: list[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head -1` that has already exited: every write fails with EPIPE
    proc = subprocess.run([sys.executable, "-m", "mmfw", *args], stdout=write_end, stderr=subprocess.PIPE,
                          env=_env(), cwd=REPO, timeout=120, check=False)
    os.close(write_end)
    assert proc.stderr.decode() == ""
    assert proc.returncode == 141


def test_synth_does_not_replace_existing_data(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    small = ["--num-train", "4", "--num-eval", "4", "--image-size", "32"]
    assert main(["data", "synth", *small]) == 0  # the default place, empty: written
    eval_json = tmp_path / "data/synth/eval.json"
    before = eval_json.read_bytes()
    capsys.readouterr()
    assert main(["data", "synth", *small, "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: data/synth already holds a dataset (train.json, eval.json); pass --overwrite to replace "
                   "it or --out DIR to write another one\n")
    assert eval_json.read_bytes() == before
    assert main(["data", "synth", *small, "--seed", "1", "--overwrite"]) == 0
    assert eval_json.read_bytes() != before


def test_train_ends_with_where_the_results_are_and_a_command_that_works(tiny_experiment, tmp_path: Path,
                                                                        capsys) -> None:
    tiny_experiment["training"].update(max_steps=2, max_new_tokens=2, trackers=[])
    tiny_experiment["data"]["eval_max_samples"] = 2
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tiny_experiment))
    assert main(["-q", "train", str(path), "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    run_dir = tiny_experiment["output_dir"]
    assert json.loads(lines[0])["run_dir"] == run_dir
    assert lines[1].startswith(f"results in {run_dir}/: metrics.json, predictions.jsonl, plots/, model/ (eval "
                               "accuracy ")
    assert lines[2].startswith(f"next: mmfw generate {run_dir} --image ")
    assert lines[3] == f"      open {run_dir}/plots/*.png, or redraw them with: mmfw plot {run_dir}"
    command = shlex.split(lines[2].removeprefix("next: "))
    assert command[0] == "mmfw" and main(["-q", *command[1:], "--max-new-tokens", "2"]) == 0
