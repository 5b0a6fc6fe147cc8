"""Render suite results (the JSON of ``python -m benchmarks``) as Markdown, and put it into docs/performance.md
between the ``<!-- benchmarks:start -->`` and ``<!-- benchmarks:end -->`` markers (the rest of the file is kept)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

START, END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"
TARGETS = {"end_to_end": 2.0, "step": 1.1, "preprocessing": 1.5, "generation": 1.0, "later_turn": 2.0, "loader": 3.0}


def _ms(d: dict[str, float]) -> str:
    return f"{d['min']:.3f} / {d['median']:.3f}"


def _x(v: float) -> str:
    return f"{v:.2f}x"


def fusion(r: dict[str, Any]) -> list[str]:
    row0 = r["rows"][0]
    out = [f"P = {row0['patches']} image tokens per sample, D = {row0['dim']}, 64 text tokens; outputs identical "
           "(tolerance 0). ms per call, min / median:", "",
           "| batch | mmfw `splice_image_features` | transformers `masked_scatter` | LLaVA-style loop | "
           "mmfw vs masked_scatter | mmfw vs loop | aten ops mmfw / transformers / loop |",
           "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in r["rows"]:
        ms, ops = row["ms"], row["aten_ops"]
        out.append(f"| {row['batch']} | {_ms(ms['mmfw'])} | {_ms(ms['transformers'])} | {_ms(ms['llava-loop'])} | "
                   f"{_x(ms['transformers']['min'] / ms['mmfw']['min'])} | "
                   f"{_x(ms['llava-loop']['min'] / ms['mmfw']['min'])} | "
                   f"{ops['mmfw']} / {ops['transformers']} / {ops['llava-loop']} |")
    return out


def step(r: dict[str, Any]) -> list[str]:
    c = r["checks"]
    out = [f"Batch {r['batch'][0]} x {r['batch'][1]} tokens (right-padded, {r['real_tokens']} real). Checked: loss "
           f"{c['loss_mmfw']:.6f} vs {c['loss_transformers']:.6f} (1e-5 relative), {c['grad_tensors']} gradient "
           f"tensors, largest difference {c['max_grad_rel_diff']:.2g} of the tensor's largest gradient (limit 1e-4). "
           f"Matmul peak in this process: {r['matmul_peak_gflops']:.1f} GFLOP/s (fp32 `torch.mm`, best of sizes "
           + ", ".join(f"{n}: {v:.0f}" for n, v in r["matmul_gflops_by_size"].items()) + ").", "",
           "| side | s/step min / median | counted GFLOP (fwd + bwd) | CPU MFU (min time) | real tokens/s |",
           "|---|---:|---:|---:|---:|"]
    for name, s in r["sides"].items():
        out.append(f"| {name} | {s['s_min']:.4f} / {s['s_median']:.4f} | {s['gflop']:.3f} | {s['mfu_min']:.1%} | "
                   f"{s['tokens_per_s_min']:.0f} |")
    out += ["", f"mmfw vs transformers: **{_x(r['speedup_min'])}** (min), {_x(r['speedup_median'])} (median)."]
    if "compiled" in r:
        c = r["compiled"]
        out[-1] += (f" With `training.compile`: **{_x(c['speedup_min'])}** (min), {_x(c['speedup_median'])} (median), "
                    f"after a compilation of {c['compile_s']:.0f} s (the first step; checked: loss "
                    f"{r['checks']['compiled']['loss_mmfw']:.6f}, largest gradient difference "
                    f"{r['checks']['compiled']['max_grad_rel_diff']:.2g}).")
    return out


def generation(r: dict[str, Any]) -> list[str]:
    out = [f"Greedy, {r['rows'][0]['new_tokens']} new tokens, one image per prompt, left-padded; "
           "checked: identical token ids. min / median:", "",
           "| batch | side | time to first token, ms | ms / token | whole call, ms | vision-encoder calls |",
           "|---:|---|---:|---:|---:|---:|"]
    for row in r["rows"]:
        for name, s in row["sides"].items():
            out.append(f"| {row['batch']} | {name} | {s['ttft_ms_min']:.1f} / {s['ttft_ms_median']:.1f} | "
                       f"{s['ms_per_token_min']:.2f} / {s['ms_per_token_median']:.2f} | "
                       f"{s['call_ms_min']:.1f} / {s['call_ms_median']:.1f} | {s['vision_calls']} |")
    out += [""] + [f"Batch {row['batch']}: mmfw vs transformers, whole call: **{_x(row['speedup_call_min'])}** (min), "
                   f"{_x(row['speedup_call_median'])} (median)." for row in r["rows"]]
    out += [""] + later_turn(r["later_turn"])
    return out


def later_turn(r: dict[str, Any] | str) -> list[str]:
    if isinstance(r, str):  # results saved before the chat API
        return [f"Later turn about an already-seen image: {r}."]
    out = [f"Later turn about an already-seen image (`benchmarks/later_turn.py`): the second question of a chat, "
           f"{r['prompt_tokens']} prompt tokens of which the chat holds {r['chat_prefilled']} in its cache; checked: "
           f"{r['check']}. ms, min / median:", "",
           f"| side | time to first token | whole reply ({r['new_tokens']} tokens) |", "|---|---:|---:|"]
    labels = {"chat": "mmfw `Conversation.ask` (features and KV cache kept)",
              "mmfw-fresh": "mmfw `generate`, whole conversation again",
              "transformers-fresh": "transformers `generate`, whole conversation again"}
    for side, s in r["sides"].items():
        out.append(f"| {labels[side]} | {s['ttft_ms_min']:.1f} / {s['ttft_ms_median']:.1f} | "
                   f"{s['turn_ms_min']:.1f} / {s['turn_ms_median']:.1f} |")
    out += ["", f"Chat vs encoding again, time to first token: **{_x(r['ttft_transformers_min'])}** (min), "
            f"{_x(r['ttft_transformers_median'])} (median) against transformers, {_x(r['ttft_mmfw_min'])} / "
            f"{_x(r['ttft_mmfw_median'])} against mmfw's `generate`; whole reply: {_x(r['turn_transformers_min'])} / "
            f"{_x(r['turn_transformers_median'])} and {_x(r['turn_mmfw_min'])} / {_x(r['turn_mmfw_median'])}."]
    return out


def preprocessing(r: dict[str, Any]) -> list[str]:
    out = [f"Photos: {', '.join(r['photos'])}; one call per image; outputs compared ({r['tolerance']}). "
           "Images/s from the best and the median repeat:", "",
           "| strategy | mmfw backend | transformers processors (fast, slow) | mmfw | fast | slow | mmfw vs fast | "
           "mmfw vs slow | max abs diff to fast | to slow |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in r["rows"]:
        s = row["sides"]

        def ips(k: str, s: dict[str, Any] = s) -> str:
            return f"{s[k]['images_per_s_best']:.1f} / {s[k]['images_per_s_median']:.1f}"

        out.append(f"| `{row['strategy']}` ({row['encoder_px']} px) | {row.get('backend', 'pil')} | "
                   f"{', '.join(row['processors'])} | {ips('mmfw')} "
                   f"| {ips('transformers-fast')} | {ips('transformers-slow')} | **{_x(row['vs_fast_best'])}** | "
                   f"{_x(row['vs_slow_best'])} | {row['diffs']['fast_max']:.3f} | {row['diffs']['slow_max']:.3f} |")
    return out


def loader(r: dict[str, Any]) -> list[str]:
    return [f"{r['samples']} samples (photos as JPEG files, `pad` at {r['encoder_px']} px = {r['image_tokens']} image "
            f"tokens, batches of {r['batch_size']}, {r['num_workers']} worker(s)); step: forward + backward + AdamW "
            f"on a batch of shape {r['batch_shape']}. Samples/s, best / median:", "",
            "| loader | training step consumes | loader vs step |", "|---:|---:|---:|",
            f"| {r['loader_samples_per_s_best']:.1f} / {r['loader_samples_per_s_median']:.1f} | "
            f"{r['step_samples_per_s_best']:.1f} / {r['step_samples_per_s_median']:.1f} | "
            f"**{_x(r['ratio_best'])}** / {_x(r['ratio_median'])} |"]


def end_to_end(r: dict[str, Any]) -> list[str]:
    out = [f"{r['samples']} samples, one epoch, {r['real_tokens']} real tokens (padded batches in data order "
           f"would be {r.get('padded_efficiency_in_order', float('nan')):.0%} real); transformers: padded batches of "
           f"{r['padded_batch_size']}; mmfw: packed rows of {r['pack_length']} tokens, {r['packed_rows_per_step']} "
           f"per step. Held-out loss at the initial weights: {r['eval_loss_at_init']:.4f}.", "",
           "| side | steps | training call, s (min / median) | process, s (min) | real tokens/s (best) | "
           "last logged train loss | held-out loss |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, s in r["sides"].items():
        out.append(f"| {name} | {s['steps']} | {s['s_min']:.1f} / {s['s_median']:.1f} | {s['process_s_min']:.1f} | "
                   f"{s['real_tokens_per_s_best']:.0f} | {s['final_train_loss']:.4f} | {s['eval_loss']:.4f} |")
    out += ["", f"mmfw vs transformers: **{_x(r['speedup_min'])}** (min), {_x(r['speedup_median'])} (median).", "",
            "Loss curves (step: train loss):", ""]
    for name, s in r["sides"].items():
        out.append(f"- {name}: " + ", ".join(f"{st}: {loss:.3f}" for st, loss in s["curve"]))
    return out


def targets(b: dict[str, Any]) -> list[str]:
    rows = []
    for key, label in (("end_to_end", "synthetic VQA"), ("end_to_end_skewed", "length-skewed")):
        if key in b:
            rows.append((f"end to end, {label} (real tokens/s)", TARGETS["end_to_end"], b[key]["speedup_min"],
                         b[key]["speedup_median"]))
    if "step" in b:
        rows.append(("training step", TARGETS["step"], b["step"]["speedup_min"], b["step"]["speedup_median"]))
        if "compiled" in b["step"]:
            c = b["step"]["compiled"]
            rows.append(("training step, `training.compile`", TARGETS["step"], c["speedup_min"], c["speedup_median"]))
    for row in b.get("preprocessing", {}).get("rows", []):
        if row["strategy"] in ("pad", "anyres") and row.get("backend", "pil") == "torch":  # the default backend
            rows.append((f"preprocessing `{row['strategy']}` (default backend torch) vs fast", TARGETS["preprocessing"], row["vs_fast_best"],
                         row["vs_fast_median"]))
    if "loader" in b:
        rows.append((f"loader (1 worker) vs step consumption, {b['loader']['encoder_px']} px", TARGETS["loader"],
                     b["loader"]["ratio_best"], b["loader"]["ratio_median"]))
    for row in b.get("generation", {}).get("rows", []):
        rows.append((f"generation, batch {row['batch']}", TARGETS["generation"], row["speedup_call_min"],
                     row["speedup_call_median"]))
    later = b.get("generation", {}).get("later_turn")
    if isinstance(later, dict):
        for key, label in (("ttft", "time to first token"), ("turn", f"whole reply of {later['new_tokens']}")):
            rows.append((f"later turn, seen image, vs transformers ({label})", TARGETS["later_turn"],
                         later[f"{key}_transformers_min"], later[f"{key}_transformers_median"]))
    elif "generation" in b:
        rows.append(("later turn, seen image", TARGETS["later_turn"], float("nan"), float("nan")))
    out = ["| comparison | target | measured (min / median) | met |", "|---|---:|---:|---|"]
    for name, target, lo, med in rows:
        met = "yes" if min(lo, med) >= target else "no" if max(lo, med) < target else "not clearly (min and median disagree)"
        if lo != lo:  # nan: not measured
            out.append(f"| {name} | >= {target:g}x | not measured | - |")
            continue
        out.append(f"| {name} | >= {target:g}x | {lo:.2f}x / {med:.2f}x | {met} |")
    return out


SECTIONS = {"fusion": ("Fusion", fusion), "step": ("Training step and CPU MFU", step),
            "generation": ("Generation", generation), "preprocessing": ("Preprocessing", preprocessing),
            "loader": ("Data loading vs the training step", loader),
            "end_to_end": ("End to end, synthetic VQA", end_to_end),
            "end_to_end_skewed": ("End to end, length-skewed data", end_to_end)}


def render_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [f"Measured {results['started']} with `{results['command']}` ({results['repeats']} interleaved repeats; "
             f"{'smoke sizes' if results['smoke'] else 'full sizes'}) on {m['platform']}, {m['processor']}, "
             f"{m['cpu_count']} CPUs (os.cpu_count), {m['threads']} thread(s), Python {m['python']}, torch "
             f"{m['torch']}, transformers {m['transformers']}; load average at start {m['loadavg_at_start']}.", "",
             "### Against the targets", ""] + targets(results["benchmarks"])
    for key, (title, fn) in SECTIONS.items():
        if key in results["benchmarks"]:
            r = results["benchmarks"][key]
            lines += ["", f"### {title}", ""]
            if "measured" in r and r["measured"]["command"] != results["command"]:
                lines += [f"Measured {r['measured']['started']} with `{r['measured']['command']}`.", ""]
            lines += fn(r)
    return "\n".join(lines) + "\n"


def update_docs(path: Path, text: str) -> None:
    doc = path.read_text()
    if START not in doc or END not in doc:
        raise SystemExit(f"{path}: no {START} ... {END} markers to write the tables between")
    head, rest = doc.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{text}{END}{tail}")


def main() -> None:
    p = argparse.ArgumentParser(description="render benchmark results into docs/performance.md")
    p.add_argument("results", type=Path)
    p.add_argument("--docs", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "performance.md")
    a = p.parse_args()
    update_docs(a.docs, render_markdown(json.loads(a.results.read_text())))


if __name__ == "__main__":
    main()
