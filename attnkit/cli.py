"""The `attnkit` command line: parses, calls the package, prints. No model code here."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every `attnkit` sub-command."""
    parser = argparse.ArgumentParser(
        prog="attnkit",
        description="Self-attention and the Transformer from first principles.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    commands.add_parser(
        "demo",
        help="show the core at work: the base model's size, fused vs. reference attention",
        description="Build the paper's base Transformer and report its parameter count; show that the fused "
        "and step-by-step attention paths agree and how their memory differs at a long length.",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `attnkit` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from attnkit import demo

        demo.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
