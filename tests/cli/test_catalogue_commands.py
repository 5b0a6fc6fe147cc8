"""The failure catalogue of the commands around a run: ``mmfw sweep``, ``eval``, ``chat``, ``plot``, ``export``,
``generate``, and a hub id that is not cached on a machine that is not told it is offline.

Same contract as ``test_catalogue.py``: exit code 2, one located line per problem, no traceback.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli.catalogue_utils import assert_fails, cli, set_path, write_config


def test_uncached_hub_id_without_offline_mode_fails_in_seconds(tiny_experiment: dict[str, Any], tokenizer_dir: Path,
                                                               tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ``HF_HUB_OFFLINE``: one short request tells a machine without network (or a hub without the repository)
    apart from one that can download; no retry loop (that took 80 s). The bound is generous: it only rules out the
    retries (in this process, so that the imports are not timed)."""
    cfg = set_path(tiny_experiment, "model.llm", {"type": "llama", "pretrained": "nobody-here/not-cached-model-123",
                                                  "tokenizer": str(tokenizer_dir)})
    config = write_config(tmp_path / "exp.yaml", cfg)
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    cli(["data", "check", config, "--limit", "1"])  # imports everything once
    start = time.monotonic()
    res = cli(["train", config])
    elapsed = time.monotonic() - start
    assert_fails(res, "model.llm.pretrained", "'nobody-here/not-cached-model-123' is not in the local Hugging Face "
                 "cache", "hf download")
    assert "offline (HF_HUB_OFFLINE=1)" not in res.err
    assert elapsed < 30, f"took {elapsed:.0f} s"
