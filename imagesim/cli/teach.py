"""Teaching commands: ``which``, ``tree``, ``graph`` and ``tour``.

Each parses its arguments, calls one function of ``imagesim.teach`` (or ``imagesim.tour``)
and prints the result; errors go to ``imagesim.cli.main``.
"""

from __future__ import annotations

import os
import shutil
import sys

import click


def _store(ctx: click.Context):
    from ..store import Store

    obj = ctx.find_root().obj or {}
    root = obj.get("root") if isinstance(obj, dict) else None
    return Store(root)


def _is_tty() -> bool:
    stream = sys.stdout
    try:
        return stream.isatty() and os.environ.get("NO_COLOR") is None
    except (AttributeError, ValueError):
        return False


@click.command("which")
@click.argument("target", metavar="CONTAINER|IMAGE")
@click.argument("path")
@click.option("--image", "prefer_image", is_flag=True,
              help="Look TARGET up as an image first (when a container has the same name).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@click.pass_context
def which(ctx: click.Context, target: str, path: str, prefer_image: bool,
          as_json: bool) -> None:
    """Say which layer supplies PATH in a container or image, what it shadows below, and
    which whiteout or opaque directory hides lower versions, with the reasons in words."""
    from .. import teach

    subject = teach.open_subject(_store(ctx), target,
                                 prefer="image" if prefer_image else None)
    try:
        answer = teach.explain(subject, path)
    except FileNotFoundError as e:
        # Not an error of the tool: the answer is "nothing here", with what hides it.
        click.echo(f"{e.filename}: {e.strerror}", err=True)
        ctx.exit(1)
    if as_json:
        import json

        click.echo(json.dumps(answer.to_json(), indent=2))
        return
    for line in answer.lines():
        click.echo(line)


@click.command("tree")
@click.argument("target", metavar="CONTAINER|IMAGE")
@click.argument("path", required=False, default="/")
@click.option("--layers", "all_layers", is_flag=True,
              help="Show every layer holding each entry (top-most first), not only the "
                   "one that supplies it.")
@click.option("-L", "--level", type=int, default=None, help="Descend at most this deep.")
@click.option("--color/--no-color", default=None,
              help="Colour per layer (default: on a terminal).")
@click.option("--image", "prefer_image", is_flag=True,
              help="Look TARGET up as an image first.")
@click.pass_context
def tree(ctx: click.Context, target: str, path: str, all_layers: bool, level: int | None,
         color: bool | None, prefer_image: bool) -> None:
    """The merged tree of a container or image, each entry marked with the letter of the
    layer that supplies it (a = the base layer, + = the container's writable layer), and
    A/C/D marks for what a container added, changed and deleted."""
    from .. import teach

    subject = teach.open_subject(_store(ctx), target,
                                 prefer="image" if prefer_image else None)
    rows = teach.tree(subject, path, max_depth=level)
    use_color = _is_tty() if color is None else color
    lines = teach.format_tree(subject, rows, all_layers=all_layers, color=use_color)
    if use_color:
        from rich.console import Console

        console = Console(file=sys.stdout, force_terminal=True,
                          highlight=False, soft_wrap=True)
        for line in lines:
            console.print(line)
    else:
        for line in lines:
            click.echo(line)


@click.command("graph")
@click.option("--format", "fmt", type=click.Choice(["text", "dot", "svg"]), default=None,
              help="text (the default on a terminal), dot (Graphviz source: the default "
                   "otherwise) or svg (drawn by Graphviz `dot`).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write to FILE (atomically) instead of standard output.")
@click.pass_context
def graph(ctx: click.Context, fmt: str | None, output: str | None) -> None:
    """Images, their layers and containers as a graph: a layer shared by several images is
    drawn once, with its size and how many images use it."""
    from .. import teach

    g = teach.build_graph(_store(ctx))
    if fmt is None:
        # a text tree to read on a terminal; DOT for a pipe (`imagesim graph | dot -Tpng`);
        # for a file, what its name says (SVG when Graphviz can draw it)
        if output is None:
            fmt = "text" if _is_tty() else "dot"
        elif output.endswith((".dot", ".gv")):
            fmt = "dot"
        elif output.endswith(".txt"):
            fmt = "text"
        else:
            fmt = "svg" if output.endswith(".svg") or shutil.which("dot") else "dot"
    if fmt == "text":
        data = ("\n".join(g.to_text()) + "\n").encode()
    elif fmt == "dot":
        data = g.to_dot().encode()
    else:
        data = teach.render_svg(g.to_dot())
    if output is None:
        if fmt == "svg":
            sys.stdout.flush()
            buffer = getattr(sys.stdout, "buffer", None)
            if buffer is not None:
                buffer.write(data)
                buffer.flush()
            else:
                sys.stdout.write(data.decode())
        else:
            click.echo(data.decode(), nl=False)
        return
    _atomic_write(output, data)
    click.echo(f"wrote {output} ({len(data)} bytes, {fmt})", err=True)


def _atomic_write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@click.command("tour")
@click.option("--step", is_flag=True, help="Pause for Enter between steps.")
@click.option("--lesson", "lessons", multiple=True, metavar="NAME",
              help="Run only this part (repeatable); see --list.")
@click.option("--list", "list_only", is_flag=True, help="List the lessons and exit.")
@click.option("--keep", is_flag=True,
              help="Keep the temporary root afterwards (its path is printed).")
@click.option("--root", "tour_root", type=click.Path(file_okay=False), default=None,
              help="Run in this store instead of a temporary one (kept afterwards).")
@click.pass_context
def tour(ctx: click.Context, step: bool, lessons: tuple[str, ...], list_only: bool,
         keep: bool, tour_root: str | None) -> None:
    """A guided, offline walk through the whole lesson: each step shows the imagesim command,
    its real output, and what just happened in the layers. Runs in a temporary root unless
    --root is given; exits non-zero if any step misbehaves."""
    from .. import tour as tour_mod

    if list_only:
        for lesson in tour_mod.LESSONS:
            click.echo(f"{lesson.name:<12} {lesson.title}")
        return
    root_ctx = ctx.find_root()
    obj = root_ctx.obj or {}
    source = root_ctx.get_parameter_source("root")
    # the tour runs in a throw-away root unless one is named on the command line: an
    # IMAGESIM_ROOT set for everyday work is not filled with the lesson's containers
    explicit = source is not None and source.name == "COMMANDLINE"
    from . import COMMANDS, _available, main

    def has_command(name: str) -> bool:
        target = COMMANDS.get(name)
        return target is not None and _available(target[0])

    root = tour_root or (obj.get("root") if explicit else None)
    status = tour_mod.run_tour(main, has_command=has_command, root=root,
                               lessons=list(lessons) or None, pause=step, keep=keep,
                               out=sys.stdout, color=_is_tty())
    if status:
        ctx.exit(status)
