"""Benchmark: time per chat turn with :class:`mmfw.chat.Conversation` (image encoded once, KV cache kept) against
re-sending the whole conversation to ``generate`` every turn (image encoded again, every token prefilled again).

    OMP_NUM_THREADS=1 python benchmarks/chat_turns.py [--run RUN_DIR] [--turns 6] [--max-new-tokens 8] [--repeats 5]

Without ``--run`` the model is ``configs/quickstart.yaml``'s architecture at random initialisation (time depends on
the shapes, not on the values), over a tokenizer trained on a small synthetic set in a temporary directory. Every
reply is exactly ``--max-new-tokens`` long (``min_new_tokens``), and both paths produce the same greedy tokens
(checked). Each turn is timed ``--repeats`` times on copies of the conversation
and the minimum is kept, of wall time and of the process's CPU time (the machine may be shared: CPU time
is the steadier number). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

QUESTIONS = ("What color is the shape?", "What shape is it?", "How many shapes are there?", "Is it large?",
             "What is the background?", "Describe the picture.", "Which color again?", "And the shape?")


def quickstart_run(work: Path) -> Path:
    """A model directory with configs/quickstart.yaml's model at random init."""
    from mmfw.components import default_registries
    from mmfw.config import load_config
    from mmfw.data.synth import generate_synthetic_vqa
    from mmfw.data.tokenizer_train import texts_from_llava_json, train_tokenizer
    from mmfw.model.builder import build_model
    from mmfw.model.io import save_model_dir

    synth = generate_synthetic_vqa(work / "synth", num_train=400, num_eval=4, image_size=64, seed=0)
    train_tokenizer(list(texts_from_llava_json([synth.train])), work / "tokenizer", vocab_size=512)
    registries = default_registries()
    cfg = load_config(REPO / "configs" / "quickstart.yaml", registries,
                      [f"model.llm.tokenizer={work / 'tokenizer'}"])
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg.model, registries)
    return save_model_dir(model, tokenizer, cfg, work / "run" / "model").parent


def fresh_generate(pipe, messages, image, max_new_tokens: int) -> list[int]:
    """What a stateless API does each turn: preprocess and encode the image, prefill the whole conversation."""
    from mmfw.data.tokenize import encode_prompt

    x = pipe.model.image_strategy.preprocess(image)
    ids = encode_prompt(messages, pipe.tokenizer, image_token=pipe.cfg.model.fusion.image_token,
                        image_token_counts=[pipe.model.image_strategy.num_tokens(x.size)],
                        system_prompt=pipe.cfg.data.system_prompt)
    batch = pipe.collator([{"input_ids": ids, "labels": [-100] * len(ids), "images": [x]}])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_sizes", "num_tiles")}
    return pipe.model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                               do_sample=False)[0].tolist()


def _mins(times: list[tuple[float, float]]) -> tuple[float, float]:
    """The smallest wall time and the smallest CPU time of the repeats."""
    return min(t[0] for t in times), min(t[1] for t in times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a trained run directory (default: the quickstart architecture, random init)")
    parser.add_argument("--image", help="image to talk about (default: the first synthetic eval image)")
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from PIL import Image

    from mmfw.data.images import load_image
    from mmfw.inference import load_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else quickstart_run(Path(tmp))
        image_path = args.image or next(iter(sorted((Path(tmp) / "synth" / "images").glob("eval_*.png"))), None)
        pipe = load_pipeline(run)
        image: Image.Image = load_image(image_path)
        calls = [0]
        pipe.model.vision_encoder.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))

        chat = pipe.chat(image, max_new_tokens=args.max_new_tokens)
        rows = []
        for turn in range(args.turns):
            question = QUESTIONS[turn % len(QUESTIONS)]
            cached_times = []
            for _ in range(args.repeats):  # each repeat asks on a copy of the conversation before this turn
                trial = copy.copy(chat)
                trial._cache = copy.deepcopy(chat._cache)
                trial.messages, trial._features = list(chat.messages), list(chat._features)
                trial._pending, trial._cache_ids = list(chat._pending), list(chat._cache_ids)
                start, cpu = time.perf_counter(), time.process_time()
                trial.ask(question, min_new_tokens=args.max_new_tokens)
                cached_times.append((time.perf_counter() - start, time.process_time() - cpu))
            before = chat.llm_tokens
            chat.ask(question, min_new_tokens=args.max_new_tokens)
            read = chat.llm_tokens - before
            messages = chat.messages[:-1]
            fresh_times, calls_before = [], calls[0]
            for _ in range(args.repeats):
                start, cpu = time.perf_counter(), time.process_time()
                fresh = fresh_generate(pipe, messages, image, args.max_new_tokens)
                fresh_times.append((time.perf_counter() - start, time.process_time() - cpu))
            assert fresh == chat.last_reply_ids, (turn, fresh, chat.last_reply_ids)
            prompt = len(chat.prompt_ids(messages))
            rows.append((turn + 1, prompt, read, len(fresh), _mins(cached_times), _mins(fresh_times),
                         (calls[0] - calls_before) // args.repeats))
        print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} thread(s); model: {run if args.run else 'quickstart architecture'}; "
              f"{args.max_new_tokens} new tokens per turn; min of {args.repeats}")
        print(f"vision encoder calls of the whole chat: {chat.vision_encoder_calls}")
        print("\n| turn | prompt tokens | prefilled by the chat | chat: wall / CPU ms | encoder calls | "
              "re-send everything: wall / CPU ms | encoder calls | speed-up (CPU) |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for turn, prompt, read, _, cached, fresh, fresh_calls in rows:
            print(f"| {turn} | {prompt} | {read} | {cached[0] * 1e3:.1f} / {cached[1] * 1e3:.1f} | {int(turn == 1)} | "
                  f"{fresh[0] * 1e3:.1f} / {fresh[1] * 1e3:.1f} | {fresh_calls} | {fresh[1] / cached[1]:.2f}x |")


if __name__ == "__main__":
    main()
