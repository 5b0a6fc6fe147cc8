"""Helpers of the failure catalogue (``tests/cli/test_catalogue*.py``): run the real CLI, check how it failed.

:func:`cli` runs ``mmfw.cli.main.main`` in this process with stdout and stderr captured (an exception escaping
``main`` is recorded as the traceback a user would see); :func:`cli_subprocess` runs ``python -m mmfw`` for the cases
whose behaviour depends on a real process (signals, resource limits, locks held by another pid, environment).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import subprocess
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TRACEBACK = "Traceback (most recent call last)"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def cli(args: Sequence[str], env: dict[str, str] | None = None) -> Result:
    """``mmfw ARGS`` in this process; an exception that escapes ``main`` becomes a printed traceback, exit 1."""
    from mmfw.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as e:  # argparse
                code = int(e.code or 0)
            except BaseException:  # noqa: BLE001 - what the console script would print
                traceback.print_exc()
                code = 1
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return Result(code, out.getvalue(), err.getvalue())


def subprocess_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MMFW_DISABLE_PLUGIN_AUTOLOAD="1", TOKENIZERS_PARALLELISM="false")
    env.update(extra)
    return env


def cli_subprocess(args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 240,
                   cwd: str | Path | None = None) -> Result:
    """``python -m mmfw ARGS`` in a child process."""
    proc = subprocess.run([sys.executable, "-m", "mmfw", *map(str, args)], capture_output=True, text=True,
                          env=env or subprocess_env(), timeout=timeout, cwd=cwd)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_no_traceback(res: Result) -> None:
    assert TRACEBACK not in res.text, res.text


def assert_fails(res: Result, *fragments: str, code: int = 2) -> None:
    """Exit ``code``, no traceback, every ``fragment`` on stderr, every stderr line an ``error:`` or log line."""
    assert_no_traceback(res)
    assert res.code == code, f"exit {res.code}, expected {code}\nstdout: {res.out}\nstderr: {res.err}"
    for fragment in fragments:
        assert fragment in res.err, f"{fragment!r} not in stderr:\n{res.err}"


def assert_ok(res: Result, *fragments: str) -> None:
    assert_no_traceback(res)
    assert res.code == 0, f"exit {res.code}\nstdout: {res.out}\nstderr: {res.err}"
    for fragment in fragments:
        assert fragment in res.text, f"{fragment!r} not in output:\n{res.text}"


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def set_path(cfg: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """A copy of ``cfg`` with ``dotted`` (list items by index) set to ``value``."""
    out = copy.deepcopy(cfg)
    *parents, last = dotted.split(".")
    node: Any = out
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out
