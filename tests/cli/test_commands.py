"""The command line: list, schema, and config errors reported without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mmfw.cli.main import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_every_kind_and_source(capsys) -> None:
    code, out, _ = run_cli(["list"], capsys)
    assert code == 0
    for kind in ("vision_encoders:", "connectors:", "llms:", "image_strategies:"):
        assert kind in out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("mlp "))
    assert "mmfw.builtin" in line and "MLPConnector" in line


def test_list_one_kind_and_unknown_kind(capsys) -> None:
    code, out, _ = run_cli(["list", "connectors"], capsys)
    assert code == 0 and out.startswith("connectors:") and "clip" not in out
    code, _, err = run_cli(["list", "conectors"], capsys)
    assert code == 2 and "did you mean 'connectors'?" in err


def test_schema_is_a_json_schema_with_registered_types(capsys, tmp_path: Path) -> None:
    code, _, _ = run_cli(["schema", "-o", str(tmp_path / "s.json")], capsys)
    assert code == 0
    schema = json.loads((tmp_path / "s.json").read_text())
    text = json.dumps(schema)
    assert '"const": "mlp"' in text and '"const": "clip"' in text
    assert "model" in schema["properties"] and "training" in schema["properties"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.connector.type=mpl", "model.connector.type: unknown type 'mpl'; did you mean 'mlp'? valid choices: "),
        ("model.connector.detph=3", "model.connector.detph: unknown key"),
        ("training.learning_rate=fast", "training.learning_rate: Input should be a valid number"),
    ],
)
def test_train_with_bad_config_exits_2_with_located_message(tiny_experiment: dict, tmp_path: Path, override: str,
                                                             expected: str, capsys) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tiny_experiment))
    code, _, err = run_cli(["train", str(path), "--set", override], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: {expected}")
    assert not (tmp_path / "run").exists()  # nothing was built or written


def test_console_entry_point_prints_no_traceback(tiny_experiment: dict, tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tiny_experiment))
    env = {**os.environ, "MMFW_DISABLE_PLUGIN_AUTOLOAD": "1"}
    proc = subprocess.run([sys.executable, "-m", "mmfw", "train", str(path), "--set", "model.llm.type=lama"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"error: {path}: model.llm.type: unknown type 'lama'; did you mean 'llama'? "
                                   "valid choices: " + proc.stderr.strip().split("valid choices: ")[1])
    assert "'llama'" in proc.stderr.split("valid choices: ")[1].split(",")[0]
