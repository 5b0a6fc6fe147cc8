"""``mmfw schema``: the JSON schema of experiment configs (for YAML editors), built from the registries; files that
``extends`` another are checked with nothing required (see :mod:`mmfw.config.schema`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmfw.cli.common import CLIError
from mmfw.components import default_registries
from mmfw.config.schema import experiment_json_schema


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("schema", help="write the JSON schema of experiment configs")
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    schema = experiment_json_schema(default_registries())
    text = json.dumps(schema, indent=2)
    if args.output:
        out = Path(args.output)
        if out.is_dir():
            raise CLIError(f"-o {out}: is a directory; name a file")
        try:
            out.write_text(text + "\n", encoding="utf-8")
        except OSError as e:
            raise CLIError(f"-o {out}: cannot write: {e.strerror or e}") from None
    else:
        print(text)
    return 0
