"""``imagesim volume create|ls|inspect|rm|prune``: docker's volume commands and output."""

from __future__ import annotations

import json
from typing import Any

import click

from ..errors import ImageSimError


def _volumes(ctx: click.Context):
    from ..container import ContainerStore
    from ..store import Store

    obj = ctx.find_root().obj or {}
    root = obj.get("root") if isinstance(obj, dict) else None
    return ContainerStore(Store(root)).volumes


def _kv(items: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in items:
        k, _, v = item.partition("=")
        out[k] = v
    return out


@click.group("volume", context_settings={"help_option_names": ["-h", "--help"]})
def volume() -> None:
    """Manage volumes (data that lives outside any container's writable layer)."""


@volume.command("create")
@click.option("-d", "--driver", default="local", show_default=True, help="Only 'local'.")
@click.option("--label", multiple=True, help="Set metadata (K=V).")
@click.option("-o", "--opt", multiple=True, help="Driver options (K=V), recorded.")
@click.option("--name", "name_opt", help="The volume name.")
@click.argument("name", required=False)
@click.pass_context
def create(ctx: click.Context, driver: str, label: tuple[str, ...], opt: tuple[str, ...],
           name_opt: str | None, name: str | None) -> None:
    """Create a volume (a random 64-hex name when none is given); print its name."""
    if driver != "local":
        raise ImageSimError(f"plugin \"{driver}\" not found")
    if name and name_opt and name != name_opt:
        raise click.UsageError("conflicting options: either specify --name or provide "
                               "positional arg, not both")
    vol = _volumes(ctx).create(name or name_opt, labels=_kv(label), options=_kv(opt))
    click.echo(vol.name)


@volume.command("ls")
@click.option("-q", "--quiet", is_flag=True, help="Only display volume names.")
@click.option("-f", "--filter", "filters", multiple=True,
              help="dangling=true|false, name=X, label=K[=V].")
@click.option("--format", "fmt", help="json, or a Go template such as {{.Name}}.")
@click.pass_context
def ls(ctx: click.Context, quiet: bool, filters: tuple[str, ...], fmt: str | None) -> None:
    """List volumes: DRIVER and VOLUME NAME, as docker prints them."""
    vs = _volumes(ctx)
    items = []
    for v in vs.list():
        keep = True
        for f in filters:
            key, _, value = f.partition("=")
            if key == "dangling":
                used = bool(vs.users(v.name))
                keep = keep and (used != (value.lower() in ("true", "1")))
            elif key == "name":
                keep = keep and value in v.name
            elif key == "label":
                k, eq, val = value.partition("=")
                keep = keep and k in v.labels and (not eq or v.labels[k] == val)
            else:
                raise ImageSimError(f"invalid filter '{key}'")
        if keep:
            items.append(v)
    if quiet:
        for v in items:
            click.echo(v.name)
        return
    if fmt:
        from .containers import render_template

        for v in items:
            d = {"Name": v.name, "Driver": "local", "Mountpoint": v.mountpoint,
                 "Scope": "local", "Labels": ",".join(f"{k}={x}" for k, x in v.labels.items())}
            click.echo(json.dumps(d) if fmt == "json" else render_template(fmt, d))
        return
    from .containers import table

    click.echo(table([["DRIVER", "VOLUME NAME"], *[["local", v.name] for v in items]]))


@volume.command("inspect")
@click.option("-f", "--format", "fmt", help="Format the output using a Go template.")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def inspect(ctx: click.Context, fmt: str | None, names: tuple[str, ...]) -> None:
    """Print volumes as JSON (CreatedAt, Driver, Labels, Mountpoint, Name, Options, Scope)."""
    vs = _volumes(ctx)
    objs: list[dict[str, Any]] = []
    missing = []
    for n in names:
        try:
            objs.append(vs.get(n).to_docker())
        except ImageSimError:
            missing.append(n)
    if fmt:
        from .containers import render_template

        for o in objs:
            click.echo(render_template(fmt, o))
    else:
        click.echo(json.dumps(objs, indent=4))
    if missing:
        for n in missing:
            click.echo(f"Error response from daemon: get {n}: no such volume", err=True)
        ctx.exit(1)


@volume.command("rm")
@click.option("-f", "--force", is_flag=True, help="Ignore volumes that do not exist.")
@click.argument("names", nargs=-1, required=True)
@click.pass_context
def rm(ctx: click.Context, force: bool, names: tuple[str, ...]) -> None:
    """Remove volumes and their data (refused for a volume a container uses)."""
    vs = _volumes(ctx)
    bad = False
    for n in names:
        try:
            vs.remove(n, force=force)
        except ImageSimError as e:
            click.echo(f"Error response from daemon: {e}", err=True)
            bad = True
            continue
        click.echo(n)
    if bad:
        ctx.exit(1)


@volume.command("prune")
@click.option("-a", "--all", "all_volumes", is_flag=True,
              help="Remove all unused volumes, not just anonymous ones.")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation.")
@click.option("--filter", "filters", multiple=True, help="label=K[=V], label!=K[=V].")
@click.pass_context
def prune(ctx: click.Context, all_volumes: bool, force: bool, filters: tuple[str, ...]) -> None:
    """Remove unused volumes (anonymous only, unless -a)."""
    from ..units import human_size

    warning = ("WARNING! This will remove all local volumes not used by at least one "
               "container.") if all_volumes else (
        "WARNING! This will remove anonymous local volumes not used by at least one "
        "container.")
    if not force and not click.confirm(warning + "\nAre you sure you want to continue?",
                                       default=False):
        return
    removed, reclaimed = _volumes(ctx).prune(all_volumes, filters)
    if removed:
        click.echo("Deleted Volumes:")
        for n in removed:
            click.echo(n)
        click.echo("")
    click.echo(f"Total reclaimed space: {human_size(reclaimed)}")
