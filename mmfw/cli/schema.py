"""``mmfw schema``: the JSON schema of experiment configs (for YAML editors), built from the registries."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmfw.components import default_registries
from mmfw.config import experiment_config_class


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help="write the JSON schema of experiment configs")
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    schema = experiment_config_class(default_registries()).model_json_schema()
    text = json.dumps(schema, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0
