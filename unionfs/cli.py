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


@cli.command(context_settings={"ignore_unknown_options": False})
@click.option("-f", "foreground", is_flag=True, help="Stay in the foreground.")
@click.option("-d", "debug", is_flag=True,
              help="Log every FUSE request and its answer on stderr (implies -f).")
@click.option("-s", "single", is_flag=True, hidden=True,
              help="Single-threaded (the default; accepted for fuse-overlayfs scripts).")
@click.option("-o", "options", multiple=True, metavar="OPTS",
              help="lowerdir=L1:L2 (top-most first, \\: escapes a colon), upperdir=U, "
                   "workdir=W, redirect_dir=on|off, index=on|off, metacopy=on|off, xino=..., "
                   "ro, trace=FILE, timeout=SECONDS, threaded=1, cache_readdir=on|off, "
                   "readdirplus=on|off, passthrough=on|off (the kernel reads and writes upper "
                   "files itself; default on), sync_copyup (flush copied-up data before it "
                   "appears, as "
                   "kernel overlayfs; default off, as fuse-overlayfs), volatile (or fsync=0: "
                   "no sync calls at all), "
                   "api=lowlevel|highlevel (adapter; default lowlevel), and FUSE options "
                   "(allow_other, default_permissions, fsname=, ...). See docs/mount.md.")
@click.option("--trace", "trace", metavar="FILE",
              help="Append one line per copy-up, whiteout, opaque, redirect and EXDEV.")
@click.argument("mountpoint", type=click.Path())
def mount(foreground: bool, debug: bool, single: bool, options: tuple[str, ...],
          trace: str | None, mountpoint: str) -> int:
    """Mount a union at MOUNTPOINT with FUSE (fuse-overlayfs command line).

    Without -f, returns once the mount is live, with the daemon in the background.
    Without upperdir the mount is read-only (writes fail with EROFS).
    """
    from .mount import MountError, OptionError, parse_options
    from .mount import mount as do_mount

    try:
        opts = parse_options([*options, *([f"trace={_escape_opt(trace)}"] if trace else [])])
        return do_mount(opts, mountpoint, foreground=foreground, debug=debug)
    except OptionError as e:
        click.echo(f"unionfs mount: {e}", err=True)
        return 2
    except MountError as e:
        click.echo(f"unionfs mount: {e}", err=True)
        return 1


def _escape_opt(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,")


@cli.command()
@click.option("-l", "-z", "lazy", is_flag=True, help="Lazy unmount (detach now, clean up later).")
@click.argument("mountpoint", type=click.Path())
def umount(lazy: bool, mountpoint: str) -> int:
    """Unmount MOUNTPOINT and wait for its daemon to finish."""
    from .mount import MountError
    from .mount import umount as do_umount

    try:
        do_umount(mountpoint, lazy=lazy)
    except MountError as e:
        click.echo(f"unionfs umount: {e}", err=True)
        return 1
    return 0


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the provenance as JSON.")
@click.argument("path", type=click.Path())
def which(as_json: bool, path: str) -> int:
    """Where does PATH (on a live unionfs mount) come from? The layer that supplies it, what
    it shadows below, and any whiteout or opaque directory that hides lower versions."""
    import json

    from .mount import query_which

    try:
        info = query_which(path)
    except OSError as e:
        where = f": {e.filename}" if e.filename else ""
        click.echo(f"unionfs which: {e.strerror or e}{where}", err=True)
        return 1
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        text = info.get("text") or json.dumps(info)
        # names that are not UTF-8 come back as surrogate escapes: print their bytes' best form
        click.echo(text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    return 0


@cli.command("diff")
@click.argument("upperdir", type=click.Path(exists=True, file_okay=False))
@click.option("--lowerdir", metavar="L1:L2", default="",
              help="The lower layers, top-most first: tells added (A) from changed (C).")
@click.option("--width", type=int, default=None,
              help="Total width of the three columns (default: the terminal's).")
def diff(upperdir: str, lowerdir: str, width: int | None) -> None:
    """Show an overlayfs upper dir three ways side by side: as overlayfs keeps it on disk
    (char-device whiteouts, overlay xattrs), as the OCI layer tar a commit would write
    (`.wh.` names) and as `docker diff` lines. Nothing is written.

    Without --lowerdir an entry that is not a deletion shows as `?` in the docker diff
    column: only the lower layers can tell whether it was added or changed.
    """
    import shutil

    from .upperview import format_side_by_side, upper_view

    lowers = [p for p in lowerdir.split(":") if p]
    view = upper_view(upperdir, lowers)
    cols = width or shutil.get_terminal_size((120, 24)).columns
    for line in format_side_by_side(view, cols):
        click.echo(line)


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
