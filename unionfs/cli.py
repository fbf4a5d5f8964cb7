"""``unionfs``: mount a union (fuse-overlayfs compatible command line), ask where a file comes
from, show an upper dir three ways, run a conformance check, or watch a short demonstration."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="unionfs-imagesim", prog_name="unionfs")
def cli() -> None:
    """A copy-on-write union filesystem with Linux overlayfs semantics."""


@cli.command()
def demo() -> None:
    """A two-minute demonstration of lookup, copy-up, whiteouts and opaque directories."""
    from .demo import run

    run(click.echo)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command line; return its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        rv = cli.main(args=args, prog_name="unionfs", standalone_mode=False)
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.ClickException as e:
        e.show()
        return 2 if isinstance(e, click.UsageError) else 1
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        click.echo(f"unionfs: {e.strerror or e}{where}", err=True)
        return 1
    return rv if isinstance(rv, int) else 0
