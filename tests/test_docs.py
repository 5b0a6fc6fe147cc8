"""The docs are true: every Python block in README.md and docs/ runs as written, every YAML block parses and, where
it is a config (or a part of one), passes the config schema; the README links every page; mkdocs' nav lists every
page.

Blocks run in one sandbox laid out like a checkout after the quickstart: ``configs/`` (the repo's), ``data/synth/``
and ``runs/quickstart/``. The run there is a tiny stand-in (a few steps of a tiny model on a small synthetic set),
trained once per session, and so is ``runs/quickstart-2stage/`` (a tiny LoRA run standing in for the two-stage
quickstart). A block marked ``<!-- snippet: needs-run -->`` uses them; one marked ``<!-- snippet: needs-export -->``
also gets ``OUT``, the stand-in run exported with ``mmfw export``; ``needs-extra:NAME`` runs only where that extra
(``eval``: lmms-eval and datasets) is installed. Markers combine with commas. A YAML block marked
``<!-- snippet: yaml-under KEY.PATH -->`` is a fragment validated at that place of a config; a block whose keys are
top-level config keys but that is not a complete config is validated as a file that ``extends`` another.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted((REPO / "docs").rglob("*.md"))
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
MARKER = re.compile(r"<!--\s*snippet:\s*(?P<what>[^>]*?)\s*-->\s*$")
TOP_LEVEL_KEYS = {"extends", "name", "seed", "output_dir", "model", "data", "training", "stages"}
KIND_KEYS = {"vision_encoders": "vision_encoder", "connectors": "connector", "llms": "llm",
             "image_strategies": "image_strategy"}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    code: str
    marker: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def blocks(*langs: str) -> list[Block]:
    found = []
    for path in [REPO / "README.md", *PAGES]:
        text = path.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            if m.group("lang") not in langs:
                continue
            before = text[: m.start()].rstrip("\n").splitlines()
            marker = MARKER.search(before[-1]) if before else None
            body = textwrap.dedent(m.group("body"))
            found.append(Block(path, text.count("\n", 0, m.start()) + 1, m.group("lang"), body,
                               marker.group("what") if marker else ""))
    return found


FILE_LISTING = re.compile(r"# [\w./-]+\.py")
"""A block whose first line names a file (``# mmfw_maxpool/plugin.py``) is a file of a walk-through, not code to run
on its own: tests/test_docs_plugins.py writes docs/plugins.md's files out as a package and runs its tests."""
PYTHON = [b for b in blocks("python") if not FILE_LISTING.fullmatch(b.code.splitlines()[0] if b.code else "")]
YAML = [b for b in blocks("yaml", "yml") if not re.search(r"^(base|grid|seeds|executor):", b.code, re.M)]
"""YAML blocks, less sweep files (tests/sweep validates those)."""


def test_the_docs_have_snippets() -> None:
    assert len(PYTHON) >= 8 and len(YAML) >= 10


# -- Python ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def sandbox(tmp_path_factory, registries, synth_data, tokenizer_dir, tiny_model) -> Path:
    """A directory like a checkout after `mmfw train configs/quickstart.yaml`, with a tiny stand-in run."""
    import torch

    from mmfw.config import load_config_dict
    from mmfw.training.trainer import Trainer

    root = tmp_path_factory.mktemp("docs")
    shutil.copytree(REPO / "configs", root / "configs")
    shutil.copytree(Path(synth_data.train).parent, root / "data" / "synth")
    shutil.copytree(tokenizer_dir, root / "data" / "synth" / "tokenizer")
    model = copy.deepcopy(tiny_model)
    model["llm"]["tokenizer"] = "data/synth/tokenizer"
    exp = {"name": "quickstart", "seed": 0, "output_dir": "runs/quickstart", "model": model,
           "data": {"train": [{"path": "data/synth/train.json"}], "eval": [{"path": "data/synth/eval.json"}],
                    "max_length": 96, "eval_max_samples": 4},
           "training": {"max_steps": 3, "batch_size": 4, "learning_rate": 1e-3, "max_new_tokens": 2,
                        "trackers": []}}
    lora = copy.deepcopy(exp)
    lora.update(name="quickstart-2stage", output_dir="runs/quickstart-2stage")
    lora["training"]["policy"] = {"llm": {"type": "lora", "r": 4, "alpha": 8, "target_modules": "all-linear"}}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        torch.set_num_threads(1)
        for config in (exp, lora):
            Trainer(load_config_dict(config, registries), registries, progress=False).train()
    return root


@pytest.fixture(scope="session")
def exported(sandbox: Path) -> Path:
    from mmfw.cli.main import main

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(sandbox)
        assert main(["-q", "export", "runs/quickstart", "OUT"]) == 0
    return sandbox / "OUT"


@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
def test_python_block_runs(block: Block, request, monkeypatch) -> None:
    markers = {m.strip() for m in block.marker.split(",") if m.strip()}
    unknown = markers - {"needs-run", "needs-export", "needs-extra:eval"}
    assert not unknown, f"{block.id}: unknown snippet marker(s) {sorted(unknown)}"
    if "needs-extra:eval" in markers:
        pytest.importorskip("lmms_eval", reason=f'{block.id} needs the eval extra (pip install -e ".[eval]")')
    fixture = "exported" if "needs-export" in markers else "sandbox"
    root = request.getfixturevalue(fixture)
    if fixture == "exported":
        root = root.parent
    monkeypatch.chdir(root)
    code = compile(block.code, block.id, "exec")
    exec(code, {"__name__": f"snippet_{block.line}"})  # noqa: S102 - the docs' own code, run as written


# -- YAML -----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def schema_validator(registries) -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    from mmfw.config.schema import experiment_json_schema

    return jsonschema.Draft202012Validator(experiment_json_schema(registries))


def _as_config(block: Block, data: Any) -> dict[str, Any] | None:
    """The config (or partial config, with ``extends``) a YAML block is, or None if it is no config."""
    if block.marker.startswith("yaml-under "):
        keys = block.marker.removeprefix("yaml-under ").split(".")
        for key in reversed(keys):
            data = {key: data}
        return {"extends": "base.yaml", **data}
    if not isinstance(data, dict):
        return None
    if block.path.parent.name == "components" and block.path.stem in KIND_KEYS and "type" in data:
        return {"extends": "base.yaml", "model": {KIND_KEYS[block.path.stem]: data}}
    if set(data) <= TOP_LEVEL_KEYS and not {"model", "training"} <= set(data):
        return {"extends": "base.yaml", **data}  # a part of a config
    return data


@pytest.mark.parametrize("block", YAML, ids=[b.id for b in YAML])
def test_yaml_block_is_a_valid_config(block: Block, schema_validator, registries) -> None:
    data = yaml.safe_load(block.code)
    config = _as_config(block, data)
    assert config is not None, f"{block.id}: not a config; mark it `<!-- snippet: yaml-under KEY -->` or use text"
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in schema_validator.iter_errors(config)]
    assert errors == [], f"{block.id}: {errors}"
    if config is data and "extends" not in data:  # a complete config: pydantic's own validation too
        from mmfw.config import load_config_dict

        load_config_dict(data, registries)


@pytest.mark.parametrize("block", blocks("json"), ids=[b.id for b in blocks("json")])
def test_json_block_parses(block: Block) -> None:
    json.loads(block.code)


# -- links and navigation -------------------------------------------------------------------------------------------
def test_readme_links_every_page() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    linked = {(REPO / m).resolve() for m in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", readme)}
    missing = [str(p.relative_to(REPO)) for p in PAGES if p.resolve() not in linked]
    assert missing == []


def test_mkdocs_nav_lists_every_page() -> None:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
    cfg = yaml.load((REPO / "mkdocs.yml").read_text(encoding="utf-8"), Loader=Loader)  # noqa: S506 - SafeLoader

    def pages(nav: Any) -> list[str]:
        if isinstance(nav, str):
            return [nav]
        if isinstance(nav, list):
            return [p for item in nav for p in pages(item)]
        if isinstance(nav, dict):
            return [p for value in nav.values() for p in pages(value)]
        return []

    listed = pages(cfg["nav"])
    assert sorted(listed) == sorted(str(p.relative_to(REPO / "docs")) for p in PAGES)


def test_mkdocs_build_is_strict_clean(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
