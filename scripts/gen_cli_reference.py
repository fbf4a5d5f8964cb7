#!/usr/bin/env python3
"""Write docs/cli-reference.md from the commands' own --help texts.

    .venv/bin/python scripts/gen_cli_reference.py          # rewrite the file
    .venv/bin/python scripts/gen_cli_reference.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import pathlib
import sys

import click

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "cli-reference.md"


def _sections(name: str, command: click.Command, parent: click.Context | None) -> list[str]:
    ctx = click.Context(command, info_name=name, parent=parent, terminal_width=100,
                        max_content_width=100)
    out = [f"{'#' * min(2 + name.count(' '), 4)} `{ctx.command_path}`", "", "```",
           command.get_help(ctx).rstrip(), "```", ""]
    if isinstance(command, click.Group):
        for sub in command.list_commands(ctx):
            child = command.get_command(ctx, sub)
            if child is not None and not child.hidden:
                out += _sections(sub, child, ctx)
    return out


def render() -> str:
    from imagesim.cli import cli as imagesim_cli
    from unionfs.cli import cli as unionfs_cli

    lines = ["# Command reference", "",
             "Generated from `--help` by `scripts/gen_cli_reference.py`; "
             "`tests/cli/test_reference_doc.py` fails when it is out of date.", ""]
    lines += _sections("imagesim", imagesim_cli, None)
    lines += _sections("unionfs", unionfs_cli, None)
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        current = OUT.read_text() if OUT.exists() else ""
        if current != text:
            print(f"{OUT.relative_to(ROOT)} is out of date: run scripts/gen_cli_reference.py",
                  file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
