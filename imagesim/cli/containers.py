"""Container commands, with docker's names, flags, spellings and output.

``create run start stop restart ps rm rename logs exec cp mount umount diff commit export
inspect`` and the ``container`` group holding the same commands (``container ls`` = ``ps``).

Flags are parsed as docker's pflag parses them: ``-m="msg"`` (the shell leaves ``-m=msg``)
gives ``msg``; ``--privileged=true`` and ``--rm=false`` work for boolean flags; ``-itd``
combines; for ``run``/``create``/``exec`` parsing stops at the image (or container) so the
command's own flags (``ls -la``) are left alone.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import stat as _stat
import sys
import tarfile
from collections.abc import Sequence
from typing import Any

import click

from ..container import (
    Container,
    ContainerError,
    ContainerStore,
    CreateOptions,
    ellipsis,
    parse_time,
)
from ..errors import ContainerNotFound, ImageNotFound, ImageSimError
from ..units import human_duration, human_size

_TRUE = {"true", "1", "t", "yes", "y", "on"}
_FALSE = {"false", "0", "f", "no", "n", "off"}


# -- docker-style flag parsing ---------------------------------------------------------------

class DockerCommand(click.Command):
    """A click command that reads argv the way docker's pflag does (see module docstring)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self._normalise(ctx, list(args)))

    def _normalise(self, ctx: click.Context, args: list[str]) -> list[str]:
        longs: dict[str, click.Option] = {}
        shorts: dict[str, click.Option] = {}
        for p in self.params:
            if isinstance(p, click.Option):
                for o in [*p.opts, *p.secondary_opts]:
                    if o.startswith("--"):
                        longs[o] = p
                    elif o.startswith("-"):
                        shorts[o[1:]] = p
        stop_at_positional = not ctx.allow_interspersed_args
        out: list[str] = []
        i = 0
        while i < len(args):
            a = args[i]
            i += 1
            if a == "--":
                out.extend(args[i - 1:])
                return out
            if a.startswith("--") and len(a) > 2:
                name, eq, value = a.partition("=")
                opt = longs.get(name)
                if opt is not None and opt.is_flag and eq:
                    v = value.lower()
                    if v in _TRUE:
                        out.append(name)
                    elif v not in _FALSE:
                        raise click.BadParameter(
                            f"invalid argument \"{value}\" for \"{name}\" flag: "
                            "strconv.ParseBool: parsing \"" + value + "\": invalid syntax")
                    continue
                out.append(a)
                if opt is not None and not opt.is_flag and not eq and i < len(args):
                    out.append(args[i])
                    i += 1
                continue
            if a.startswith("-") and len(a) > 1:
                j = 1
                rebuilt = "-"
                consumed_next = False
                while j < len(a):
                    ch = a[j]
                    opt = shorts.get(ch)
                    if opt is None or opt.is_flag:
                        rebuilt += ch
                        j += 1
                        if opt is not None and opt.is_flag and a[j:j + 1] == "=":
                            v = a[j + 1:].lower()  # -i=true
                            if v in _FALSE:
                                rebuilt = rebuilt[:-1]
                            j = len(a)
                        continue
                    rest = a[j + 1:]
                    if rest.startswith("="):
                        rest = rest[1:]  # pflag: -m=msg means "msg"
                    rebuilt += ch
                    if rest or j + 1 < len(a):
                        out.append(rebuilt)
                        out.append(rest)
                    else:
                        out.append(rebuilt)
                        if i < len(args):
                            out.append(args[i])
                            i += 1
                    consumed_next = True
                    break
                if not consumed_next and rebuilt != "-":
                    out.append(rebuilt)
                continue
            out.append(a)
            if stop_at_positional:
                out.extend(args[i:])
                return out
        return out


def _command(name: str, *, interspersed: bool = True, **kw: Any):
    settings = {"help_option_names": ["--help"]}
    if not interspersed:
        settings["allow_interspersed_args"] = False
    return click.command(name, cls=DockerCommand, context_settings=settings, **kw)


def _containers(ctx: click.Context) -> ContainerStore:
    from ..store import Store

    obj = ctx.find_root().obj or {}
    root = obj.get("root") if isinstance(obj, dict) else None
    return ContainerStore(Store(root))


def _out(text: str = "") -> None:
    click.echo(text)


def _err(text: str) -> None:
    click.echo(text, err=True)


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows laid out as docker's ``tabwriter`` (min width 10, padding 3; last column free)."""
    if not rows:
        return ""
    ncol = max(len(r) for r in rows)
    widths = []
    for c in range(ncol - 1):
        w = max((len(r[c]) for r in rows if c < len(r)), default=0)
        widths.append(max(10, w + 3))
    lines = []
    for r in rows:
        cells = [(cell.ljust(widths[c]) if c < ncol - 1 else cell) for c, cell in enumerate(r)]
        lines.append("".join(cells).rstrip())
    return "\n".join(lines)


# -- tiny Go-template subset for --format / -f -----------------------------------------------

_TPL = re.compile(r"\{\{\s*(.*?)\s*\}\}")


def _lookup(obj: Any, dotted: str) -> Any:
    cur = obj
    for part in [p for p in dotted.split(".") if p]:
        if isinstance(cur, dict):
            cur = cur.get(part)
        else:
            cur = getattr(cur, part, None)
    return cur


def _go_value(v: Any) -> str:
    if v is None:
        return "<no value>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{_go_value(x)}" for k, x in sorted(v.items())) + "]"
    if isinstance(v, list):
        return "[" + " ".join(_go_value(x) for x in v) + "]"
    return str(v)


def render_template(template: str, obj: Any) -> str:
    """``{{.A.B}}``, ``{{json .A}}``, ``{{.}}`` and ``\\t``/``\\n`` escapes, as docker's
    ``--format`` for the cases a lesson uses. ``ContainerError`` for anything else."""
    def one(m: re.Match) -> str:
        expr = m.group(1)
        if expr.startswith("json "):
            return json.dumps(_lookup(obj, expr[5:].strip()), separators=(",", ":"))
        if expr == ".":
            return _go_value(obj)
        if expr.startswith("."):
            return _go_value(_lookup(obj, expr))
        raise ContainerError(f"template: unsupported action {{{{{expr}}}}}")
    return _TPL.sub(one, template.replace("\\t", "\t").replace("\\n", "\n"))


# -- create / run ---------------------------------------------------------------------------

def _create_options(f):
    opts = [
        click.option("-d", "--detach", is_flag=True, help="Run in the background; print the id."),
        click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open."),
        click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY."),
        click.option("--name", help="Assign a name to the container."),
        click.option("-e", "--env", multiple=True, help="Set environment variables (K=V)."),
        click.option("--env-file", multiple=True, type=click.Path(dir_okay=False),
                     help="Read environment variables from a file."),
        click.option("-p", "--publish", multiple=True,
                     help="Publish a port: [IP:][HOSTPORT:]CTRPORT[/PROTO]."),
        click.option("--expose", multiple=True, help="Expose a port."),
        click.option("-w", "--workdir", help="Working directory inside the container."),
        click.option("-v", "--volume", multiple=True,
                     help="Bind mount or volume: SRC:DST[:ro|:rw], NAME:DST, or DST."),
        click.option("--volumes-from", multiple=True,
                     help="Mount the volumes of another container: C[:ro|:rw]."),
        click.option("--read-only", is_flag=True, help="Mount the root filesystem read-only."),
        click.option("--rm", "auto_remove", is_flag=True,
                     help="Remove the container when it exits."),
        click.option("--privileged", is_flag=True, help="Recorded (no effect here)."),
        click.option("--entrypoint", help="Override the image's ENTRYPOINT."),
        click.option("-u", "--user", help="Username or UID."),
        click.option("-h", "--hostname", help="Container host name."),
        click.option("-l", "--label", multiple=True, help="Set metadata (K=V)."),
        click.option("--restart", help="Recorded (no effect here)."),
        click.option("--network", "--net", help="Recorded (no effect here)."),
        click.option("-m", "--memory", help="Recorded (no effect here)."),
        click.option("--cpus", help="Recorded (no effect here)."),
        click.option("--trace", is_flag=True,
                     help="Print each copy-up and whiteout the shell causes."),
        click.argument("image"),
        click.argument("command", nargs=-1, type=click.UNPROCESSED),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _build_options(kw: dict[str, Any]) -> CreateOptions:
    env = list(kw["env"])
    for path in kw.get("env_file") or ():
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line and not line.startswith("#"):
                    env.append(line)
    return CreateOptions(
        name=kw["name"], command=tuple(kw["command"]), entrypoint=kw["entrypoint"],
        env=tuple(env), workdir=kw["workdir"], user=kw["user"], hostname=kw["hostname"],
        ports=tuple(kw["publish"]), volumes=tuple(kw["volume"]),
        volumes_from=tuple(kw["volumes_from"]), read_only=kw["read_only"],
        auto_remove=kw["auto_remove"], privileged=kw["privileged"], tty=kw["tty"],
        interactive=kw["interactive"], detach=kw["detach"], labels=tuple(kw["label"]),
        expose=tuple(kw["expose"]), cwd=os.getcwd())


def _create(ctx: click.Context, kw: dict[str, Any]) -> Container:
    cs = _containers(ctx)
    image = kw["image"]
    try:
        cs.store.resolve(image)
    except ImageNotFound:
        _err(f"Unable to find image '{_with_tag(image)}' locally")
        _pull_library(ctx, cs, image)
    return cs.create(image, _build_options(kw))


def _with_tag(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    return image if (":" in last or "@" in image) else image + ":latest"


def _pull_library(ctx: click.Context, cs: ContainerStore, image: str) -> None:
    """Fetch a missing image as ``docker run`` does: through the pull command when it
    exists (built-in library or a registry), printing its lines on stderr."""
    try:
        from . import registry as _registry_cli
    except ImportError:
        return
    pull = getattr(_registry_cli, "pull", None)
    if pull is None:
        return
    # docker run prints the pull's lines on stderr, keeping stdout for the container
    with contextlib.redirect_stdout(sys.stderr):
        ctx.invoke(pull, name=image, platform=None, quiet=False)


@_command("create", interspersed=False, short_help="Create a new container.")
@_create_options
@click.pass_context
def create(ctx: click.Context, **kw: Any) -> None:
    """Create a new container (its writable layer and mounts) without starting it."""
    c = _create(ctx, kw)
    _out(c.id)


def _shell_runs(c: Container, argv: list[str]) -> bool:
    """True when the built-in shell can run ``argv``: a shell, or one of its commands."""
    try:
        from .. import shell
    except ImportError:
        return False
    if not argv:
        return False
    if shell.is_shell(argv):
        return True
    sh = shell.Shell(c.view)
    return argv[0] in sh.builtins


def _bare_shell(argv: list[str]) -> bool:
    try:
        from .. import shell
    except ImportError:
        return False
    return len(argv) == 1 and shell.is_shell(argv)


def _run_in_shell(c: Container, argv: list[str], *, interactive: bool, tty: bool,
                  trace: bool = False, workdir: str | None = None,
                  env: dict[str, str] | None = None) -> int:
    from .. import shell

    # the process's streams as they are now (tests and the tour swap them)
    stdin = sys.stdin if interactive else io.StringIO()
    stdout = sys.stdout
    stderr = sys.stderr
    log = open(c.log_path, "a", encoding="utf-8")  # noqa: SIM115
    try:
        out = _Tee(stdout, log)
        err = _Tee(stderr, log)
        is_tty = False
        with contextlib.suppress(AttributeError, ValueError):
            is_tty = stdin.isatty()
        return shell.run(c.view, argv=argv, env=env or c.env,
                         workdir=workdir or c.config.get("WorkingDir") or "/",
                         hostname=c.config.get("Hostname") or c.short_id,
                         stdin=stdin, stdout=out, stderr=err,
                         interactive=bool(tty and is_tty) or None if interactive else False,
                         trace=trace)
    finally:
        with contextlib.suppress(OSError, ValueError):
            stdout.flush()
            stderr.flush()
        log.close()


class _Tee(io.TextIOBase):
    """Writes to the terminal stream and to the container's log (``logs`` shows it)."""

    def __init__(self, stream: Any, log: Any) -> None:
        self.stream = stream
        self.log = log

    def write(self, s: str) -> int:
        self.stream.write(s)
        self.log.write(s)
        return len(s)

    def flush(self) -> None:
        self.stream.flush()
        self.log.flush()

    def isatty(self) -> bool:
        try:
            return self.stream.isatty()
        except (AttributeError, ValueError):
            return False


@_command("run", interspersed=False, short_help="Create and run a new container.")
@_create_options
@click.pass_context
def run(ctx: click.Context, **kw: Any) -> None:
    """Create and start a container. Shells (``sh``, ``bash``, ``/bin/bash``) and the built-in
    shell's commands run in-process on the container's files; any other command is recorded
    and the container counts as running until ``stop`` (nothing runs on the host)."""
    c = _create(ctx, kw)
    cs = c.containers
    c.start()
    argv = c.argv
    if kw["detach"] or not _shell_runs(c, argv):
        _out(c.id)
        if kw["detach"] and _bare_shell(argv) and not kw["interactive"]:
            # `run -d ubuntu`: a shell with no stdin and nothing to do ends at once, as in
            # docker; `-itd` keeps it running
            cs.get(c.id).finished(0)
            if kw["auto_remove"]:
                cs.remove(c.id, force=True, volumes=True)
        return
    status = _run_in_shell(c, argv, interactive=kw["interactive"], tty=kw["tty"],
                           trace=kw["trace"])
    c = cs.get(c.id)
    c.finished(status)
    if kw["auto_remove"]:
        cs.remove(c.id, force=True, volumes=True)
    if status:
        ctx.exit(status)


# -- start / stop / restart / rm / rename ---------------------------------------------------

@_command("start", short_help="Start one or more stopped containers.")
@click.option("-a", "--attach", is_flag=True, help="Attach and run the shell in the terminal.")
@click.option("-i", "--interactive", is_flag=True, help="Attach STDIN.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def start(ctx: click.Context, attach: bool, interactive: bool,
          containers: tuple[str, ...]) -> None:
    """Start containers (prints each name as given)."""
    cs = _containers(ctx)
    failed = []
    for ref in containers:
        try:
            c = cs.get(ref)
            c.start()
        except ImageSimError as e:
            _err(f"Error response from daemon: {e}")
            failed.append(ref)
            continue
        if (attach or interactive) and _shell_runs(c, c.argv):
            status = _run_in_shell(c, c.argv, interactive=interactive, tty=c.config.get("Tty"))
            cs.get(c.id).finished(status)
        else:
            _out(ref)
            if _bare_shell(c.argv) and not c.config.get("OpenStdin"):
                cs.get(c.id).finished(0)  # a shell with no stdin ends at once
    if failed:
        _err("Error: failed to start containers: " + ", ".join(failed))
        ctx.exit(1)


def _each(ctx: click.Context, refs: Sequence[str], fn, verb: str) -> None:
    cs = _containers(ctx)
    bad = []
    for ref in refs:
        try:
            fn(cs, ref)
        except ImageSimError as e:
            _err(f"Error response from daemon: {e}")
            bad.append(ref)
            continue
        _out(ref)
    if bad:
        if len(refs) > 1:
            _err(f"Error: failed to {verb} containers: {', '.join(bad)}")
        ctx.exit(1)


@_command("stop", short_help="Stop one or more running containers.")
@click.option("-t", "--time", "timeout", type=int, default=10, help="Seconds to wait.")
@click.option("-s", "--signal", help="Signal to send (recorded).")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def stop(ctx: click.Context, timeout: int, signal: str | None,
         containers: tuple[str, ...]) -> None:
    """Stop containers: they stay, with their writable layer, as ``Exited``."""
    _each(ctx, containers, lambda cs, ref: cs.get(ref).stop(), "stop")


@_command("restart", short_help="Restart one or more containers.")
@click.option("-t", "--time", "timeout", type=int, default=10)
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def restart(ctx: click.Context, timeout: int, containers: tuple[str, ...]) -> None:
    """Stop then start containers."""
    def again(cs: ContainerStore, ref: str) -> None:
        c = cs.get(ref)
        c.stop()
        cs.get(c.id).start()
    _each(ctx, containers, again, "restart")


@_command("rm", short_help="Remove one or more containers.")
@click.option("-f", "--force", is_flag=True, help="Force the removal of a running container.")
@click.option("-v", "--volumes", is_flag=True, help="Remove anonymous volumes too.")
@click.argument("containers", nargs=-1, required=True)
@click.pass_context
def rm(ctx: click.Context, force: bool, volumes: bool, containers: tuple[str, ...]) -> None:
    """Remove containers and their writable layers (volume data stays)."""
    _each(ctx, containers, lambda cs, ref: cs.remove(ref, force=force, volumes=volumes), "remove")


@_command("rename", short_help="Rename a container.")
@click.argument("container")
@click.argument("new_name")
@click.pass_context
def rename(ctx: click.Context, container: str, new_name: str) -> None:
    """Rename a container."""
    _containers(ctx).rename(container, new_name)


# -- ps -------------------------------------------------------------------------------------

def _ps_fields(c: Container, trunc: bool, size: bool) -> dict[str, str]:
    cmd = c.command_text
    command = json.dumps(ellipsis(cmd, 20) if trunc else cmd, ensure_ascii=False)
    image = c.image_ref
    if re.fullmatch(r"(sha256:)?[0-9a-f]{64}", image):
        image = image.removeprefix("sha256:")[:12] if trunc else image
    fields = {
        "ID": c.short_id if trunc else c.id,
        "Image": image,
        "Command": command,
        "CreatedAt": _go_time(c.record["created"]),
        "RunningFor": human_duration(_age(c.record["created"])) + " ago",
        "Status": c.status_text(),
        "State": c.status,
        "Ports": c.ports_text(),
        "Names": c.name,
        "Mounts": ",".join(m.name[:15] if m.name else m.source for m in c.mounts),
        "Labels": ",".join(f"{k}={v}" for k, v in sorted((c.config.get("Labels")
                                                          or {}).items())),
    }
    if size:
        fields["Size"] = f"{human_size(c.size_rw())} (virtual " \
                         f"{human_size(c.size_rw() + c.size_image())})"
    return fields


def _go_time(text: str) -> str:
    """RFC 3339 -> Go's ``time.Time.String()`` form, as ``ps --format {{.CreatedAt}}``."""
    t = parse_time(text)
    return "" if t is None else t.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def _age(created: str) -> float:
    import datetime as _dt

    t = parse_time(created)
    return 0.0 if t is None else max(0.0, (_dt.datetime.now(_dt.UTC) - t).total_seconds())


def _filter_ok(c: Container, filters: Sequence[str]) -> bool:
    for f in filters:
        key, _, value = f.partition("=")
        if key == "name" and value not in c.name:
            return False
        if key == "id" and not c.id.startswith(value):
            return False
        if key == "status" and c.status != value:
            return False
        if key == "ancestor" and value not in (c.image_ref, c.image_id,
                                               c.image_id.removeprefix("sha256:")[:12]):
            return False
        if key == "volume" and not any(value in (m.name, m.destination, m.source)
                                       for m in c.mounts):
            return False
        if key == "label":
            k, eq, v = value.partition("=")
            labels = c.config.get("Labels") or {}
            if k not in labels or (eq and labels[k] != v):
                return False
    return True


def _ps(ctx: click.Context, all_: bool, quiet: bool, size: bool, no_trunc: bool,
        latest: bool, last: int, filters: Sequence[str], fmt: str | None) -> None:
    cs = _containers(ctx)
    show_all = all_ or latest or last > 0 or any(f.startswith("status=") for f in filters)
    items = [c for c in cs.list(all=show_all) if _filter_ok(c, filters)]
    if latest:
        items = items[:1]
    elif last > 0:
        items = items[:last]
    if quiet:
        for c in items:
            _out(c.id if no_trunc else c.short_id)
        return
    if fmt and fmt != "table":
        if fmt == "json":
            for c in items:
                _out(json.dumps(_ps_fields(c, not no_trunc, size), ensure_ascii=False,
                                separators=(",", ":")))
            return
        is_table = fmt.startswith("table")
        body = fmt[5:].strip() if is_table else fmt
        rows = [render_template(body, _ps_fields(c, not no_trunc, size)) for c in items]
        if is_table:
            header = _TPL.sub(lambda m: _header(m.group(1)), body.replace("\\t", "\t"))
            _out(table([r.split("\t") for r in [header, *rows]]))
        else:
            for r in rows:
                _out(r)
        return
    head = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    if size:
        head.append("SIZE")
    rows = [head]
    for c in items:
        f = _ps_fields(c, not no_trunc, size)
        row = [f["ID"], f["Image"], f["Command"], f["RunningFor"], f["Status"], f["Ports"],
               f["Names"]]
        if size:
            row.append(f["Size"])
        rows.append(row)
    _out(table(rows))


def _header(expr: str) -> str:
    names = {".ID": "CONTAINER ID", ".Image": "IMAGE", ".Command": "COMMAND",
             ".CreatedAt": "CREATED AT", ".RunningFor": "CREATED", ".Status": "STATUS",
             ".State": "STATE", ".Ports": "PORTS", ".Names": "NAMES", ".Size": "SIZE",
             ".Mounts": "MOUNTS", ".Labels": "LABELS"}
    return names.get(expr.strip(), expr.strip().lstrip(".").upper())


def _ps_options(f):
    opts = [
        click.option("-a", "--all", "all_", is_flag=True, help="Show all containers."),
        click.option("-q", "--quiet", is_flag=True, help="Only display container IDs."),
        click.option("-s", "--size", is_flag=True, help="Display total file sizes."),
        click.option("--no-trunc", is_flag=True, help="Don't truncate output."),
        click.option("-l", "--latest", is_flag=True, help="Show the latest created container."),
        click.option("-n", "--last", type=int, default=-1, help="Show n last created."),
        click.option("-f", "--filter", "filters", multiple=True, help="Filter (key=value)."),
        click.option("--format", "fmt", help="table, json, or a Go template."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


@_command("ps", short_help="List containers.")
@_ps_options
@click.pass_context
def ps(ctx: click.Context, **kw: Any) -> None:
    """List containers (running ones unless -a), as docker prints them."""
    _ps(ctx, **kw)


@_command("ls", short_help="List containers.")
@_ps_options
@click.pass_context
def container_ls(ctx: click.Context, **kw: Any) -> None:
    """List containers (``container ls`` = ``ps``)."""
    _ps(ctx, **kw)


# -- logs / exec ----------------------------------------------------------------------------

@_command("logs", short_help="Fetch the logs of a container.")
@click.option("-f", "--follow", is_flag=True, help="Accepted; prints what there is.")
@click.option("-n", "--tail", default="all", help="Lines from the end (or 'all').")
@click.option("-t", "--timestamps", is_flag=True, help="Accepted.")
@click.argument("container")
@click.pass_context
def logs(ctx: click.Context, follow: bool, tail: str, timestamps: bool, container: str) -> None:
    """Print what the container's commands wrote (the built-in shell's output, the registry
    server's log). A recorded command that never ran has no output."""
    c = _containers(ctx).get(container)
    try:
        with open(c.log_path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines(keepends=True)
    except FileNotFoundError:
        lines = []
    if tail != "all":
        try:
            n = int(tail)
        except ValueError:
            raise click.BadParameter(f"invalid tail {tail!r}") from None
        lines = lines[-n:] if n > 0 else []
    click.echo("".join(lines), nl=False)


@_command("exec", interspersed=False, short_help="Execute a command in a running container.")
@click.option("-d", "--detach", is_flag=True)
@click.option("-i", "--interactive", is_flag=True)
@click.option("-t", "--tty", is_flag=True)
@click.option("-e", "--env", multiple=True)
@click.option("-w", "--workdir")
@click.option("-u", "--user")
@click.option("--privileged", is_flag=True)
@click.option("--trace", is_flag=True, help="Print each copy-up and whiteout.")
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_(ctx: click.Context, detach: bool, interactive: bool, tty: bool, env: tuple[str, ...],
          workdir: str | None, user: str | None, privileged: bool, trace: bool,
          container: str, command: tuple[str, ...]) -> None:
    """Run a command in a running container with the built-in shell (``sh``/``bash`` open
    it; ``sh -c 'CMDS'`` runs CMDS; other commands are its built-ins)."""
    c = _containers(ctx).get(container)
    if not c.running:
        raise ContainerError(f"Container {c.id} is not running")
    try:
        from .. import shell  # noqa: F401
    except ImportError:
        raise ContainerError("the built-in shell is not available") from None
    full_env = c.env
    for item in env:
        k, _, v = item.partition("=")
        full_env[k] = v
    status = _run_in_shell(c, list(command), interactive=interactive, tty=tty, trace=trace,
                           workdir=workdir, env=full_env)
    if status:
        ctx.exit(status)


exec_.name = "exec"


# -- cp -------------------------------------------------------------------------------------

def _split_cp(arg: str) -> tuple[str | None, str]:
    """``CONTAINER:PATH`` -> (container, path); a local path -> (None, path). A leading
    ``/`` or ``.`` means local, as docker decides."""
    if arg == "-" or arg.startswith(("/", ".")):
        return None, arg
    name, sep, path = arg.partition(":")
    if not sep or "/" in name:
        return None, arg
    return name, path


@_command("cp", short_help="Copy files between a container and the local filesystem.")
@click.option("-a", "--archive", is_flag=True, help="Keep uid/gid.")
@click.option("-L", "--follow-link", is_flag=True, help="Follow a symlink in SRC_PATH.")
@click.option("-q", "--quiet", is_flag=True, help="Suppress the progress line.")
@click.argument("src")
@click.argument("dest")
@click.pass_context
def cp(ctx: click.Context, archive: bool, follow_link: bool, quiet: bool, src: str,
       dest: str) -> None:
    """Copy files/folders between a container and the local filesystem (docker's rules:
    ``SRC/.`` copies a directory's contents; a destination ending in ``/`` must be a
    directory; ``-`` streams a tar on stdin/stdout). Writes into volumes go to the host."""
    from unionfs.mounts import HostFS

    sname, spath = _split_cp(src)
    dname, dpath = _split_cp(dest)
    if (sname is None) == (dname is None):
        raise click.UsageError("copying between containers is not supported" if sname
                               else "must specify at least one container source")
    cs = _containers(ctx)
    host = HostFS("/")
    if sname is not None:
        c = cs.get(sname)
        src_fs, dst_fs = c.view, host
        src_abs = _ctr_abs(c, spath)
        if dpath == "-":
            _tar_out(src_fs, src_abs, follow_link)
            return
        dst_abs = os.path.abspath(dpath) + ("/" if dpath.endswith("/") else "")
    else:
        assert dname is not None
        c = cs.get(dname)
        src_fs, dst_fs = host, c.view
        dst_abs = _ctr_abs(c, dpath) + ("/" if dpath.endswith("/") else "")
        if spath == "-":
            _tar_in(dst_fs, dst_abs.rstrip("/") or "/", archive)
            return
        src_abs = os.path.abspath(spath) + ("/." if spath.endswith("/.") else "")
    copied = copy_path(src_fs, src_abs, dst_fs, dst_abs, archive=archive or sname is not None,
                       follow=follow_link)
    if not quiet:
        _err(f"Successfully copied {human_size(copied)} to {dest}")


def _ctr_abs(c: Container, path: str) -> str:
    if not path.startswith("/"):
        path = os.path.join(c.config.get("WorkingDir") or "/", path)
    keep_dot = path.endswith("/.")
    norm = os.path.normpath(path)
    if norm.startswith("//"):
        norm = norm[1:]
    return norm + ("/." if keep_dot and norm != "/" else "")


def copy_path(src_fs: Any, src: str, dst_fs: Any, dst: str, *, archive: bool,
              follow: bool) -> int:
    """docker cp's rules between two os-shaped filesystems. Returns bytes copied."""
    from unionfs.mounts import copy_tree

    contents_only = src.endswith("/.")
    src_path = src[:-2] or "/" if contents_only else src.rstrip("/") or "/"
    try:
        st = src_fs.stat(src_path) if follow else src_fs.lstat(src_path)
    except FileNotFoundError:
        raise ContainerError(f"Could not find the file {src_path} in "
                             f"{'container' if not hasattr(src_fs, 'root') else 'host'}") \
            from None
    dst_is_dir_hint = dst.endswith("/")
    dst_path = dst.rstrip("/") or "/"
    try:
        dst_st = dst_fs.stat(dst_path)
    except FileNotFoundError:
        dst_st = None
    base = os.path.basename(src_path.rstrip("/")) or "root"
    if not _stat.S_ISDIR(st.st_mode):
        if dst_st is None:
            if dst_is_dir_hint:
                raise ContainerError(f"destination directory {dst_path} must exist")
            target = dst_path
        elif _stat.S_ISDIR(dst_st.st_mode):
            target = dst_path.rstrip("/") + "/" + base
        else:
            target = dst_path
        with contextlib.suppress(FileNotFoundError):
            tst = dst_fs.lstat(target)
            if _stat.S_ISDIR(tst.st_mode):
                raise ContainerError(f"cannot overwrite directory {target} with non-directory")
            dst_fs.unlink(target)
        return copy_tree(src_fs, src_path, dst_fs, target, owners=archive, follow_top=follow)
    # a directory
    if dst_st is not None and not _stat.S_ISDIR(dst_st.st_mode):
        raise ContainerError("cannot copy a directory to a file")
    if dst_st is None or contents_only:
        target = dst_path
    else:
        target = dst_path.rstrip("/") + "/" + base
    return copy_tree(src_fs, src_path, dst_fs, target, owners=archive, follow_top=follow)


def _tar_out(fs: Any, path: str, follow: bool) -> None:
    """``docker cp C:PATH -``: a tar of PATH on stdout."""
    out = _binary(sys.stdout)
    base = os.path.basename(path.rstrip("/")) or "."
    with tarfile.open(fileobj=out, mode="w|") as tar:
        for p, rel in _walk(fs, path, base):
            st = fs.lstat(p)
            info = tarfile.TarInfo(rel)
            info.mode = _stat.S_IMODE(st.st_mode)
            info.uid, info.gid = st.st_uid, st.st_gid
            info.mtime = st.st_mtime
            if _stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif _stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = fs.readlink(p)
                tar.addfile(info)
            elif _stat.S_ISREG(st.st_mode):
                info.size = st.st_size
                with fs.open(p, "rb") as f:
                    tar.addfile(info, f)
    out.flush()


def _binary(stream: Any) -> Any:
    """The byte stream under a text stream (the process's, or a test's replacement)."""
    return getattr(stream, "buffer", stream)


def _walk(fs: Any, path: str, rel: str):
    yield path, rel
    st = fs.lstat(path)
    if _stat.S_ISDIR(st.st_mode):
        for name in sorted(fs.listdir(path)):
            yield from _walk(fs, path.rstrip("/") + "/" + name, rel + "/" + name)


def _tar_in(fs: Any, dest: str, archive: bool) -> None:
    """``docker cp - C:DIR``: extract a tar from stdin into DIR (which must exist)."""
    st = fs.stat(dest)
    if not _stat.S_ISDIR(st.st_mode):
        raise ContainerError(f"extraction point is not a directory: {dest}")
    stream = _binary(sys.stdin)
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for info in tar:
            name = os.path.normpath("/" + info.name).lstrip("/")
            if not name or name == ".":
                continue
            target = dest.rstrip("/") + "/" + name
            if info.isdir():
                with contextlib.suppress(FileExistsError):
                    fs.makedirs(target, exist_ok=True)
                fs.chmod(target, info.mode)
            elif info.issym():
                with contextlib.suppress(FileNotFoundError):
                    fs.unlink(target)
                fs.symlink(info.linkname, target)
            elif info.isfile():
                parent = os.path.dirname(target)
                if parent != dest.rstrip("/") and not fs.exists(parent):
                    fs.makedirs(parent, exist_ok=True)  # tars may omit parent entries
                src = tar.extractfile(info)
                assert src is not None
                with fs.open(target, "wb") as f:
                    while True:
                        block = src.read(1 << 20)
                        if not block:
                            break
                        f.write(block)
                fs.chmod(target, info.mode)
            else:
                continue
            if archive:
                with contextlib.suppress(OSError, TypeError):
                    fs.chown(target, info.uid, info.gid, follow_symlinks=False)


# -- mount / umount -------------------------------------------------------------------------

@_command("mount", short_help="Mount a container's view with FUSE.")
@click.argument("container")
@click.argument("mountpoint", type=click.Path(file_okay=False))
@click.pass_context
def mount(ctx: click.Context, container: str, mountpoint: str) -> None:
    """Mount the container's files (its union with volumes at their paths) at MOUNTPOINT
    through FUSE, so any program can edit them; returns once the mount is live."""
    from ..container import mount_view

    c = _containers(ctx).get(container)
    mount_view(c, mountpoint)


@_command("umount", short_help="Unmount a container mounted with `imagesim mount`.")
@click.argument("mountpoint", type=click.Path(file_okay=False))
@click.pass_context
def umount(ctx: click.Context, mountpoint: str) -> None:
    """Unmount MOUNTPOINT and wait until its daemon has exited."""
    from unionfs.mount import MountError
    from unionfs.mount import umount as _umount

    try:
        _umount(mountpoint)
    except MountError as e:
        raise ContainerError(str(e)) from None
    _containers(ctx).unmounted(mountpoint)


# -- diff / commit / export -----------------------------------------------------------------

@_command("diff", short_help="Inspect changes to files on a container's filesystem.")
@click.argument("container")
@click.pass_context
def diff(ctx: click.Context, container: str) -> None:
    """``A``/``C``/``D`` lines from the container's writable layer (volumes excluded)."""
    for change in _containers(ctx).get(container).diff():
        _out(str(change))


@_command("commit", short_help="Create a new image from a container's changes.")
@click.option("-a", "--author", help='Author (e.g., "John Hannibal Smith <h@a.com>").')
@click.option("-m", "--message", help="Commit message.")
@click.option("-c", "--change", multiple=True,
              help="Apply a Dockerfile instruction (CMD ENTRYPOINT ENV EXPOSE LABEL USER "
                   "VOLUME WORKDIR).")
@click.option("-p", "--pause/--no-pause", default=True, help="Accepted.")
@click.argument("container")
@click.argument("repository", required=False)
@click.pass_context
def commit(ctx: click.Context, author: str | None, message: str | None,
           change: tuple[str, ...], pause: bool, container: str,
           repository: str | None) -> None:
    """The container's writable layer becomes one new layer on top of its image's layers
    (shared, not copied); prints the new image id."""
    c = _containers(ctx).get(container)
    if repository:
        from ..reference import Reference

        Reference.parse(repository)  # ReferenceInvalid before any work
    image = c.commit(repository, author=author, message=message, changes=change)
    _out(str(image.id))


@_command("export", short_help="Export a container's filesystem as a tar archive.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write to a file.")
@click.argument("container")
@click.pass_context
def export(ctx: click.Context, output: str | None, container: str) -> None:
    """A flattened tar of the container's files (volumes excluded), to stdout or -o."""
    from ..container import export_tar

    c = _containers(ctx).get(container)
    if output is None:
        sys.stdout.flush()
        out = _binary(sys.stdout)
        if out.isatty():
            raise ContainerError("cowardly refusing to save to a terminal. Use the -o flag "
                                 "or redirect")
        export_tar(c, out)
        out.flush()
        return
    export_tar(c, output)


# -- inspect --------------------------------------------------------------------------------

@_command("inspect", short_help="Return low-level information on containers or images.")
@click.option("-f", "--format", "fmt", help="Format the output using a Go template.")
@click.option("-s", "--size", is_flag=True, help="Display total file sizes (containers).")
@click.option("--type", "kind", type=click.Choice(["container", "image", "volume"]))
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def inspect(ctx: click.Context, fmt: str | None, size: bool, kind: str | None,
            names: tuple[str, ...]) -> None:
    """JSON for containers (Config, Mounts, GraphDriver with LowerDir/UpperDir/MergedDir),
    falling back to images and volumes, as ``docker inspect`` does."""
    cs = _containers(ctx)
    objs: list[Any] = []
    missing: list[str] = []
    for name in names:
        obj = None
        if kind in (None, "container"):
            with contextlib.suppress(ContainerNotFound):
                c = cs.get(name)
                obj = c.inspect()
                if size:
                    obj["SizeRw"] = c.size_rw()
                    obj["SizeRootFs"] = c.size_rw() + c.size_image()
        if obj is None and kind in (None, "image"):
            obj = _image_inspect(ctx, cs, name)
        if obj is None and kind in (None, "volume"):
            with contextlib.suppress(ImageSimError):
                obj = cs.volumes.get(name).to_docker()
        if obj is None:
            missing.append(name)
            continue
        objs.append(obj)
    if fmt:
        for o in objs:
            _out(render_template(fmt, o))
    else:
        _out(json.dumps(objs, indent=4, ensure_ascii=False))
    if missing:
        for name in missing:
            _err(f"Error: No such object: {name}")
        ctx.exit(1)


def _image_inspect(ctx: click.Context, cs: ContainerStore, name: str) -> Any:
    try:
        from . import images as _images
    except ImportError:
        _images = None
    fn = getattr(_images, "inspect_image", None) if _images is not None else None
    try:
        image = cs.store.resolve(name)
    except (ImageNotFound, ImageSimError):
        return None
    if fn is not None:
        return fn(cs.store, name)
    return {"Id": str(image.id), "RepoTags": [str(t) for t in cs.store.tags_of(image)],
            "Config": image.runtime_config, "RootFS": {
                "Type": "layers", "Layers": [str(d) for d in image.diff_ids]}}


# -- the container group --------------------------------------------------------------------

@click.group("container", context_settings={"help_option_names": ["-h", "--help"]})
def container() -> None:
    """Manage containers."""


for _cmd in (create, run, start, stop, restart, rm, rename, logs, exec_, cp, mount, umount,
             diff, commit, export, inspect, container_ls):
    container.add_command(_cmd)
container.add_command(container_ls, "list")
container.add_command(container_ls, "ps")


@_command("prune", short_help="Remove all stopped containers.")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@click.pass_context
def container_prune(ctx: click.Context, force: bool) -> None:
    """Remove every stopped container."""
    if not force and not click.confirm(
            "WARNING! This will remove all stopped containers.\nAre you sure you want to "
            "continue?", default=False):
        return
    cs = _containers(ctx)
    total = 0
    _out("Deleted Containers:")
    for c in cs.list(all=True):
        if not c.running:
            total += c.size_rw()
            cs.remove(c.id)
            _out(c.id)
    _out("")
    _out(f"Total reclaimed space: {human_size(total)}")


container.add_command(container_prune)
