"""``mmfw list [KIND]``: every registered component and the plugin it came from."""

from __future__ import annotations

import argparse

from mmfw.components import default_registries
from mmfw.config.kinds import KINDS
from mmfw.errors import format_choices


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list registered components")
    p.add_argument("kind", nargs="?", help="one kind (" + ", ".join(k.registry for k in KINDS) + ")")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    registries = default_registries()
    kinds = registries.kinds()
    if args.kind is not None:
        key = args.kind.replace("-", "_")
        if key not in kinds:
            from mmfw.cli.common import CLIError

            raise CLIError(f"unknown kind {args.kind!r}; {format_choices(key, list(kinds))}")
        kinds = {key: kinds[key]}
    for kind, registry in kinds.items():
        print(f"{kind}:")
        for entry in registry.entries():
            print(f"  {entry.name:<20} {entry.source}")
    return 0
