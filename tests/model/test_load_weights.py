"""Loading is safe and loud: safetensors only, clear mismatch errors, no remote code unless the config asks."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import mmfw
from mmfw.model.builder import WEIGHTS_NAME, CheckpointMismatchError, load_weights, save_weights


class Net(nn.Module):
    def __init__(self, hidden: int = 4, extra: bool = False, tied: bool = True) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, 10, bias=False)
        if tied:
            self.head.weight = self.embed.weight
        if extra:
            self.gate = nn.Linear(hidden, 1)


def test_round_trip_with_tied_weights(tmp_path: Path) -> None:
    src, dst = Net(), Net()
    save_weights(src, tmp_path)
    load_weights(dst, tmp_path)
    for (name, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_shape_mismatch_names_every_tensor_and_both_shapes(tmp_path: Path) -> None:
    save_weights(Net(hidden=4), tmp_path)
    model = Net(hidden=6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as info:
        load_weights(model, tmp_path, strict=False)  # shape errors are never ignored
    msg = str(info.value)
    assert "3 tensor(s) differ in shape" in msg  # head.weight is tied to embed.weight: stored once
    assert "embed.weight: checkpoint [10, 4] vs model [10, 6]" in msg
    assert "proj.weight: checkpoint [4, 4] vs model [6, 6]" in msg and "proj.bias: checkpoint [4] vs model [6]" in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing half-loaded


def test_missing_and_unexpected_keys(tmp_path: Path) -> None:
    save_weights(Net(extra=True), tmp_path)
    with pytest.raises(CheckpointMismatchError, match=r"not in the model: gate.bias, gate.weight"):
        load_weights(Net(), tmp_path)
    save_weights(Net(), tmp_path)
    with pytest.raises(CheckpointMismatchError, match=r"missing from the checkpoint: gate.bias, gate.weight"):
        load_weights(Net(extra=True), tmp_path)
    load_weights(Net(extra=True), tmp_path, strict=False)


class Boom:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_a_pickle_is_never_unpickled(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / WEIGHTS_NAME).write_bytes(pickle.dumps({"proj.weight": Boom()}))
    with pytest.raises(CheckpointMismatchError, match="is not a readable safetensors file"):
        load_weights(Net(), tmp_path)
    assert not (tmp_path / "PWNED").exists()
    with pytest.raises(FileNotFoundError, match=f"no {WEIGHTS_NAME}"):
        load_weights(Net(), tmp_path / "nowhere")


def test_source_never_unpickles_or_trusts_remote_code_by_itself() -> None:
    root = Path(mmfw.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            assert "weights_only=True" in m.group(1), f"{path}: {m.group(0)}"
        assert "trust_remote_code=True" not in text, path
        assert "pickle.load" not in text, path


def test_trust_remote_code_comes_only_from_the_config(monkeypatch) -> None:
    import transformers

    seen = []

    class FakeTokenizer:
        chat_template = "x"
        pad_token = "<pad>"

    def fake_from_pretrained(source, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return FakeTokenizer()

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_from_pretrained)
    from mmfw.llms.llama import LlamaLLM, LlamaLLMConfig

    LlamaLLM.load_tokenizer(LlamaLLMConfig(pretrained="x"))
    LlamaLLM.load_tokenizer(LlamaLLMConfig(pretrained="x", trust_remote_code=True))
    assert seen == [False, True]
