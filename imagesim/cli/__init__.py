"""``imagesim``: docker's commands over the simulator.

``main(argv) -> int`` is the one entry point (console script and tests alike). Commands live one
group per module in this package and are imported only when used, so ``--help`` stays fast.
Every ``ImageSimError`` (and ``OSError`` from the engine) is turned into a message and an exit
status here, in one place: commands never catch errors just to print them.
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence

import click

from ..errors import ImageSimError


class ExitStatus(enum.IntEnum):
    OK = 0
    ERROR = 1          # the command failed (docker's "Error response from daemon")
    USAGE = 125        # docker's status for a bad command line
    CANNOT_INVOKE = 126
    NOT_FOUND = 127
    INTERRUPTED = 130


#: command name -> (module inside imagesim.cli, attribute). Docker's names.
COMMANDS: dict[str, tuple[str, str]] = {
    # images
    "images": ("images", "images"),
    "image": ("images", "image"),
    "history": ("images", "history"),
    "tag": ("images", "tag"),
    "rmi": ("images", "rmi"),
    "save": ("images", "save"),
    "load": ("images", "load"),
    "import": ("images", "import_"),
    "layers": ("images", "layers"),
    "search": ("images", "search"),
    "samples": ("images", "samples"),
    "system": ("system", "system"),
    "fsck": ("system", "fsck"),
    # containers
    "container": ("containers", "container"),
    "create": ("containers", "create"),
    "run": ("containers", "run"),
    "start": ("containers", "start"),
    "stop": ("containers", "stop"),
    "restart": ("containers", "restart"),
    "ps": ("containers", "ps"),
    "rm": ("containers", "rm"),
    "rename": ("containers", "rename"),
    "logs": ("containers", "logs"),
    "exec": ("containers", "exec_"),
    "cp": ("containers", "cp"),
    "mount": ("containers", "mount"),
    "umount": ("containers", "umount"),
    "diff": ("containers", "diff"),
    "commit": ("containers", "commit"),
    "export": ("containers", "export"),
    "inspect": ("containers", "inspect"),
    "volume": ("volumes", "volume"),
    # registry
    "registry": ("registry", "registry"),
    "pull": ("registry", "pull"),
    "push": ("registry", "push"),
    "login": ("registry", "login"),
    "logout": ("registry", "logout"),
    # teaching
    "tour": ("teach", "tour"),
    "which": ("teach", "which"),
    "tree": ("teach", "tree"),
    "graph": ("teach", "graph"),
}


def _available(module: str) -> bool:
    return importlib.util.find_spec(f"{__name__}.{module}") is not None


class LazyGroup(click.Group):
    """Imports a command's module only when that command is run or its help is shown."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, (mod, _) in COMMANDS.items() if _available(mod))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or not _available(target[0]):
            return None
        module = importlib.import_module(f"{__name__}.{target[0]}")
        return getattr(module, target[1])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", envvar="IMAGESIM_ROOT", type=click.Path(file_okay=False),
              default=lambda: os.path.join(os.path.expanduser("~"), ".local", "share",
                                           "imagesim"),
              show_default="~/.local/share/imagesim",
              help="The local store (images, layers, containers, volumes).")
@click.version_option(package_name="unionfs-imagesim", prog_name="imagesim")
@click.pass_context
def cli(ctx: click.Context, root: str) -> None:
    """A layered image and container simulator: docker's commands, run on a real union
    filesystem engine, so you can see what every layer holds.

    Start with `imagesim tour`, or `imagesim samples` then `imagesim images`.
    """
    ctx.obj = {"root": root}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command line; return its exit status (never raises for user errors)."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        # In non-standalone mode click returns the status of ctx.exit(N) instead of raising.
        rv = cli.main(args=args, prog_name="imagesim", standalone_mode=False)
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return ExitStatus.INTERRUPTED
    except click.ClickException as e:
        e.show()
        return ExitStatus.USAGE if isinstance(e, click.UsageError) else ExitStatus.ERROR
    except ImageSimError as e:
        click.echo(f"Error: {e}", err=True)
        return ExitStatus.ERROR
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        click.echo(f"Error: {e.strerror or e}{where}", err=True)
        return ExitStatus.ERROR
    except KeyboardInterrupt:
        return ExitStatus.INTERRUPTED
    return int(rv) if isinstance(rv, int) else ExitStatus.OK
