"""``mmfw chat RUN_DIR --image IMG``: a multi-turn conversation about an image (interactive, one-shot or JSON lines).

Interactive: a ``you>`` prompt per turn (an empty line or end of input ends it). ``--prompt TEXT`` (repeatable) asks
those questions in order and prints each reply. ``--json`` reads one user turn per stdin line and prints one JSON
object per turn: ``{"turn", "prompt", "reply", "vision_encoder_calls", "llm_tokens", "seconds"}``
(``vision_encoder_calls`` counts the calls of the whole conversation so far: one per image).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="talk about an image with a trained run (the image is encoded once)")
    p.add_argument("run_dir", help="run directory or checkpoint directory")
    p.add_argument("--image", action="append", default=[], help="image shown with the first turn (repeatable)")
    p.add_argument("--prompt", action="append", default=[], help="ask this and exit (repeat for several turns)")
    p.add_argument("--json", action="store_true", help="one user turn per stdin line, one JSON object per reply")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def _turns(args: argparse.Namespace) -> tuple[object, bool]:
    if args.prompt:
        return iter(args.prompt), False
    if args.json or not sys.stdin.isatty():
        return (line.rstrip("\n") for line in sys.stdin), False
    return None, True


def run(args: argparse.Namespace) -> int:
    from mmfw.inference import load_pipeline

    pipeline = load_pipeline(args.run_dir, device=args.device)
    chat = pipeline.chat(args.image, max_new_tokens=args.max_new_tokens)
    turns, interactive = _turns(args)
    turn = 0
    while True:
        if interactive:
            try:
                prompt = input("you> ")
            except EOFError:
                break
            if not prompt.strip():
                break
        else:
            prompt = next(turns, None)  # type: ignore[call-overload]
            if prompt is None:
                break
            if not prompt.strip():
                continue
        start = time.perf_counter()
        reply = chat.ask(prompt)
        turn += 1
        if args.json:
            print(json.dumps({"turn": turn, "prompt": prompt, "reply": reply,
                              "vision_encoder_calls": chat.vision_encoder_calls, "llm_tokens": chat.llm_tokens,
                              "seconds": round(time.perf_counter() - start, 4)}), flush=True)
        else:
            print(reply if not interactive else f"model> {reply}", flush=True)
    return 0
