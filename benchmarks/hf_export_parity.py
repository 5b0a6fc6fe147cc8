"""Check: a run exported with ``mmfw export --format hf`` answers held-out questions exactly as ``mmfw generate``.

    python benchmarks/hf_export_parity.py RUN_DIR [--eval data/synth/eval.json] [-n 20] [--max-new-tokens 8]

Exports ``RUN_DIR`` to a temporary directory, loads it with transformers' ``AutoModelForImageTextToText`` and
``AutoProcessor`` (after ``import mmfw.hf``), and asks the first ``n`` questions of the eval file both ways (greedy).
Prints one row per question (reference, mmfw's answer, transformers' answer, whether the token ids are equal) and
the totals; exits 1 if any answer differs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--eval", default="data/synth/eval.json")
    parser.add_argument("-n", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    args = parser.parse_args()

    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import mmfw.hf  # noqa: F401
    from mmfw.data.synth import normalize_answer
    from mmfw.export.hf_native import export
    from mmfw.inference import load_pipeline

    records = json.loads(Path(args.eval).read_text())[:args.n]
    root = Path(args.eval).parent
    pipe = load_pipeline(args.run)
    with tempfile.TemporaryDirectory() as tmp:
        out, fmt = export(args.run, Path(tmp) / "hf", "hf")
        model = AutoModelForImageTextToText.from_pretrained(out).eval()
        processor = AutoProcessor.from_pretrained(out)
        print(f"exported {args.run} as {fmt}: {type(model).__name__}, {type(processor).__name__}\n")
        print("| # | question | reference | mmfw generate | transformers generate | same ids |")
        print("| ---: | --- | --- | --- | --- | --- |")
        same = correct = 0
        for i, rec in enumerate(records):
            question = rec["conversations"][0]["value"].replace("<image>", "").strip()
            reference = rec["conversations"][1]["value"]
            image = Image.open(root / rec["image"]).convert("RGB")
            batch = pipe.collator([pipe.prepare([image], question)])
            ours = pipe.model.generate(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values",
                                                                "image_sizes", "num_tiles")},
                                       max_new_tokens=args.max_new_tokens, do_sample=False)[0].tolist()
            text = processor.apply_chat_template([{"role": "user", "content": [
                {"type": "image"}, {"type": "text", "text": question}]}])
            inputs = processor(images=image, text=text)
            with torch.no_grad():
                theirs = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
            theirs = theirs[0, inputs["input_ids"].shape[1]:].tolist()
            a = pipe.tokenizer.decode(ours, skip_special_tokens=True).strip()
            b = processor.decode(theirs, skip_special_tokens=True).strip()
            same += ours == theirs
            correct += normalize_answer(b) == normalize_answer(reference)
            print(f"| {i} | {question} | {reference} | {a} | {b} | {'yes' if ours == theirs else 'NO'} |")
    print(f"\n{same}/{len(records)} answers token-identical; transformers' answers correct: {correct}/{len(records)}")
    return 0 if same == len(records) else 1


if __name__ == "__main__":
    sys.exit(main())
