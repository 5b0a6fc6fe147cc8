"""lmms-eval, datasets and matplotlib are imported only where they are used: the CLI, the trainer and the eval
package itself load without them (checked in a fresh interpreter through ``sys.modules``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROBE = """
import json, sys
import mmfw.cli.main, mmfw.training.trainer, mmfw.eval, mmfw.eval.harness, mmfw.eval.manifest, mmfw.training.plots
mmfw.cli.main.build_parser()
print(json.dumps(sorted(m for m in ("lmms_eval", "datasets", "matplotlib") if m in sys.modules)))
"""


def test_cli_and_trainer_import_no_optional_library() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
