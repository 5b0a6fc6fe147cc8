"""The benchmark suite runs end to end at smoke sizes (so it cannot rot), and its checks and renderer do their job."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from benchmarks.__main__ import BENCHMARKS, main
from benchmarks.common import CheckFailed, OpCounter, check_close, interleaved
from benchmarks.fusion import IMAGE_TOKEN, IMPLEMENTATIONS, inputs
from benchmarks.render import END, START, update_docs


@pytest.fixture
def restore_threads() -> Iterator[None]:
    """The suite pins threads process-wide: give the other tests of this worker their settings back."""
    threads, env = torch.get_num_threads(), {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                                               "OPENBLAS_NUM_THREADS")}
    yield
    torch.set_num_threads(threads)
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.mark.slow
def test_smoke_run_checks_every_comparison_and_renders(tmp_path: Path, restore_threads: None) -> None:
    docs = tmp_path / "performance.md"
    docs.write_text(f"# Performance\n\nintro\n\n{START}\nold tables\n{END}\n\n## Other section\n\nkept\n")
    out = tmp_path / "results.json"
    results = main(["--smoke", "--out", str(out), "--render", "--docs", str(docs)])
    assert json.loads(out.read_text())["benchmarks"].keys() == set(BENCHMARKS) - {"end_to_end_skewed"}
    b = results["benchmarks"]
    assert results["machine"]["threads"] == 1 and results["command"].startswith("python -m benchmarks --smoke")
    # every comparison checked its two sides before timing (a failed check raises instead of returning)
    assert b["step"]["checks"]["max_grad_rel_diff"] <= 1e-4 and b["step"]["checks"]["grad_tensors"] > 20
    assert all(s["gflop"] > 0 and 0 < s["mfu_min"] < 1 for s in b["step"]["sides"].values())
    assert all(s["vision_calls"] == 1 for row in b["generation"]["rows"] for s in row["sides"].values())
    later = b["generation"]["later_turn"]  # checked: same reply tokens as encoding the image again, no encoder call
    assert set(later["sides"]) == {"chat", "mmfw-fresh", "transformers-fresh"} and later["chat_prefilled"] > 0
    assert b["loader"]["loader_samples_per_s_best"] > 0 and b["loader"]["step_samples_per_s_best"] > 0
    assert {row["strategy"] for row in b["preprocessing"]["rows"]} == {"pad", "anyres", "resize"}
    assert {row["backend"] for row in b["preprocessing"]["rows"]} == {"pil", "torch"}
    assert all(row["diffs"]["slow_max"] <= 1e-5 for row in b["preprocessing"]["rows"] if row["backend"] == "pil")
    e2e = b["end_to_end"]
    assert e2e["real_tokens"] > 0 and all(s["real_tokens_per_s_best"] > 0 for s in e2e["sides"].values())
    # both trainings learn something from the same start
    assert all(s["eval_loss"] < e2e["eval_loss_at_init"] for s in e2e["sides"].values())
    text = docs.read_text()
    assert "old tables" not in text and "## Other section\n\nkept" in text and "intro" in text
    assert "### Against the targets" in text and "### End to end" in text and "torch " + torch.__version__ in text

    merged = main(["--smoke", "--only", "fusion", "--merge", str(out), "--out", str(tmp_path / "merged.json")])
    assert merged["benchmarks"].keys() == set(BENCHMARKS) - {"end_to_end_skewed"}
    assert merged["benchmarks"]["step"]["measured"]["command"] == results["command"]  # kept, with its own command
    assert merged["benchmarks"]["fusion"]["measured"]["command"] == merged["command"]  # measured again


@pytest.mark.slow
def test_stream_startup_smoke_starts_every_source(tmp_path: Path) -> None:
    from benchmarks import stream_startup

    out = tmp_path / "stream.json"
    result = stream_startup.main(["--smoke", "--work", str(tmp_path / "work"), "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert result.keys() == {"command", "smoke", "machine", "rows"} and result["smoke"] is True
    assert result["command"].startswith("python -m benchmarks.stream_startup --smoke")
    rows = {row["source"]: row for row in result["rows"]}
    assert rows.keys() == set(stream_startup.SOURCES)  # every source trained its first step
    for row in rows.values():
        assert row["records"] == stream_startup.SMOKE_RECORDS
        run, = row["runs"]  # one repeat
        assert run.keys() == {"startup_s", "peak_rss_mb"}
        assert 0 < run["startup_s"] < 120 and 100 < run["peak_rss_mb"] < 100_000
    for source in stream_startup.SOURCES:  # one step trained and the model written by each
        assert (tmp_path / "work" / source / "run" / "model" / "model.safetensors").is_file()
    index = json.loads((tmp_path / "work" / "32" / "wds" / "index.json").read_text())
    assert sum(index["shards"].values()) == stream_startup.SMOKE_RECORDS
    table = stream_startup.table(result["rows"])
    assert all(f"| {name} | " in table for name in ("json (cold)", "webdataset", "hf"))


def test_benchmarks_import_nothing_from_tests() -> None:
    import ast

    for path in Path(__file__).resolve().parents[2].joinpath("benchmarks").glob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [m for m in names if m == "tests" or m.startswith("tests.")], path


def test_fusion_implementations_agree_with_several_images_per_row() -> None:
    embeds, ids, features = inputs(batch=3, patches=4, dim=8)
    ids[1, 20:24] = IMAGE_TOKEN  # a second image in sample 1
    features = torch.randn(int((ids == IMAGE_TOKEN).sum()), 8)
    ref = IMPLEMENTATIONS["mmfw"](embeds, ids, features)
    for fn in IMPLEMENTATIONS.values():
        assert torch.equal(fn(embeds, ids, features), ref)
    assert torch.equal(ref[1, 20:24], features[8:12])  # rows of sample 1's second image, in order


def test_check_close_fails_outside_the_tolerance() -> None:
    a = torch.zeros(3)
    assert check_close("same", a, a + 1e-7, atol=1e-6) == pytest.approx(1e-7)
    with pytest.raises(CheckFailed, match="different: max abs difference"):
        check_close("different", a, a + 1e-3, atol=1e-6)
    with pytest.raises(CheckFailed, match="shapes differ"):
        check_close("shape", a, torch.zeros(4), atol=1.0)


def test_op_counter_counts_aten_ops_and_interleaving_runs_each_side_repeats_times() -> None:
    x = torch.ones(4)
    with OpCounter() as c:
        (x + 1).mul(2).sum()
    assert c.ops == {"add": 1, "mul": 1, "sum": 1}
    calls: list[str] = []
    t = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"] and len(t["a"]["runs"]) == 3
    assert t["a"]["min"] <= t["a"]["median"]


def test_update_docs_needs_the_markers(tmp_path: Path) -> None:
    doc = tmp_path / "p.md"
    doc.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        update_docs(doc, "x")
