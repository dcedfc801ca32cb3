"""A command's argument parser made from its module docstring, the way every `sdgm` command explains itself."""

from __future__ import annotations

import argparse


def command_parser(prog: str, doc: str, epilog: bool = True) -> argparse.ArgumentParser:
    """The parser of command `prog`: the docstring's first paragraph is its description and, with `epilog`, the rest
    of the docstring (kept as written: it holds usage blocks and tables) comes after the options in --help."""
    first, _, rest = doc.partition("\n\n")
    return argparse.ArgumentParser(
        prog=prog,
        description=first,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=rest if epilog else None,
    )
