"""Registering components and loading configs stay cheap: model libraries are imported only where a model is built.

Every config load needs every registered config class, so component modules must not import timm, open_clip,
peft or transformers' model code at their top level (``mmfw inspect`` and every other command would pay for all of
them). Checked in a fresh interpreter through ``sys.modules``, so that it cannot regress silently.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmfw.lazy import lazy_attr

REPO = Path(__file__).resolve().parents[1]
PRESETS = REPO / "configs" / "presets"
HEAVY = ("timm", "open_clip", "peft", "transformers.modeling_utils")

PROBE = """
import json, sys
from mmfw.components import default_registries
from mmfw.config import load_config
registries = default_registries()
for path in sys.argv[1:]:
    load_config(path, registries)
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def imported_after(*configs: Path, autoload: bool = True) -> list[str]:
    """The modules of :data:`HEAVY` that registering every component (and loading ``configs``) imports."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "MMFW_DISABLE_PLUGIN_AUTOLOAD": "0" if autoload else "1"}
    proc = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *map(str, configs)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("autoload", [False, True], ids=["builtins", "with-entry-point-plugins"])
def test_registering_components_imports_no_model_library(autoload: bool) -> None:
    assert imported_after(autoload=autoload) == []


def test_loading_presets_imports_no_model_library() -> None:
    # omnilmm-12b is left out on purpose: validating an eva02 config asks timm whether the model name exists.
    presets = [PRESETS / f"{name}.yaml" for name in ("llava-1.5-7b", "llava-next-mistral-7b", "clip-qwen2-7b")]
    assert imported_after(*presets) == []


def test_lazy_attr_imports_on_first_access_and_caches() -> None:
    class Holder:
        value = lazy_attr("json:JSONDecoder.decode")

    assert Holder.value is json.JSONDecoder.decode
    assert Holder().value is Holder.value
    with pytest.raises(ValueError, match="module:name"):
        lazy_attr("json.JSONDecoder")


def test_llm_classes_resolve_to_transformers() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from mmfw.llms.llama import LlamaLLM

    assert LlamaLLM.hf_config_class is LlamaConfig and LlamaLLM.hf_model_class is LlamaForCausalLM
