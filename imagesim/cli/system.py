"""``imagesim system df [-v]`` and ``imagesim system prune``, with docker's output.

Image sizes follow docker's definitions: an image's SIZE is the sum of its unpacked layers;
SHARED SIZE the part of it in layers other images also use; UNIQUE SIZE the rest, so
SIZE = SHARED SIZE + UNIQUE SIZE. The Images line's SIZE counts every layer once (that is
the point of sharing), RECLAIMABLE what removing unused images would free.
"""

from __future__ import annotations

from typing import Any

import click

from . import _util
from ._util import human_size, render, store_of, time_ago

_CTX = {"help_option_names": ["-h", "--help"]}


def image_usage(store: Any) -> list[dict[str, Any]]:
    """One row per image record: sizes as docker's ``system df -v`` defines them."""
    records = store.images()
    users: dict[Any, int] = {}
    sizes: dict[Any, int] = {}
    for rec in records:
        for d in set(rec.image.diff_ids):
            users[d] = users.get(d, 0) + 1
            sizes[d] = store.layer_size(d)
    rows = []
    for rec in records:
        ids = set(rec.image.diff_ids)
        size = sum(sizes[d] for d in ids)
        shared = sum(sizes[d] for d in ids if users[d] > 1)
        names = [(t.familiar_name, t.tag or "<none>") for t in rec.tags] or \
            [("<none>", "<none>")]
        for repo, tag in names:
            rows.append({"Repository": repo, "Tag": tag, "ID": rec.image.id.short,
                         "CreatedSince": time_ago(rec.image.created),
                         "Size": human_size(size, 4), "SharedSize": human_size(shared, 4),
                         "UniqueSize": human_size(size - shared, 4),
                         "Containers": str(len(rec.pinned_by)),
                         "_size": size, "_shared": shared, "_digest": rec.image.digest,
                         "_layers": ids, "_active": bool(rec.pinned_by)})
    return rows


def _containers(store: Any) -> list[Any]:
    try:
        from ..container import ContainerStore
    except ImportError:
        return []
    try:
        return ContainerStore(store).list(all=True)
    except Exception:  # a half-written container module must not break df
        return []


def _volumes(store: Any) -> tuple[list[Any], Any]:
    try:
        from ..container import ContainerStore
        cs = ContainerStore(store)
        return cs.volumes.list(), cs
    except Exception:
        return [], None


def _attr(obj: Any, attr: str) -> Any:
    """An attribute that may be a property or a method of another module's object."""
    value = getattr(obj, attr, "")
    try:
        return value() if callable(value) else value
    except Exception:
        return ""


def _size(obj: Any, attr: str) -> int:
    value = getattr(obj, attr, 0)
    try:
        value = value() if callable(value) else value
        return int(value or 0)
    except Exception:
        return 0


@click.group("system", context_settings=_CTX)
def system() -> None:
    """Manage imagesim (disk usage, pruning)."""


@system.command("df", context_settings=_CTX)
@click.option("-v", "--verbose", is_flag=True, help="Show detailed information on space usage")
@click.option("--format", "fmt", help="Format output using a custom template")
@click.pass_context
def df(ctx: click.Context, verbose: bool, fmt: str | None) -> None:
    """Show disk usage: images (layers counted once), containers, volumes."""
    store = store_of(ctx)
    rows = image_usage(store)
    containers = _containers(store)
    volumes, cs = _volumes(store)
    seen: dict[str, dict[str, Any]] = {}
    for r in rows:
        seen.setdefault(str(r["_digest"]), r)
    all_layers: dict[Any, int] = {}
    active_layers: set[Any] = set()
    for r in seen.values():
        for d in r["_layers"]:
            all_layers[d] = store.layer_size(d)
        if r["_active"]:
            active_layers |= r["_layers"]
    total = sum(all_layers.values())
    reclaim = sum(s for d, s in all_layers.items() if d not in active_layers)
    c_sizes = [_size(c, "size_rw") for c in containers]
    c_total = sum(c_sizes)
    c_running = [c for c in containers if getattr(c, "running", False)]
    c_reclaim = sum(s for c, s in zip(containers, c_sizes, strict=True)
                    if not getattr(c, "running", False))
    v_sizes = [_size(v, "size") for v in volumes]
    v_users = [len(cs.volume_users(v.name)) if cs is not None else 0 for v in volumes]
    v_total = sum(v_sizes)
    v_reclaim = sum(s for s, u in zip(v_sizes, v_users, strict=True) if u == 0)

    def pct(part: int, whole: int) -> str:
        return f"{human_size(part, 4)} ({int(100 * part / whole) if whole else 0}%)"

    if not verbose:
        summary = [
            {"Type": "Images", "TotalCount": str(len(seen)),
             "Active": str(sum(1 for r in seen.values() if r["_active"])),
             "Size": human_size(total, 4), "Reclaimable": pct(reclaim, total)},
            {"Type": "Containers", "TotalCount": str(len(containers)),
             "Active": str(len(c_running)), "Size": human_size(c_total, 4),
             "Reclaimable": pct(c_reclaim, c_total)},
            {"Type": "Local Volumes", "TotalCount": str(len(volumes)),
             "Active": str(sum(1 for u in v_users if u)), "Size": human_size(v_total, 4),
             "Reclaimable": pct(v_reclaim, v_total)},
            {"Type": "Build Cache", "TotalCount": "0", "Active": "0", "Size": "0B",
             "Reclaimable": "0B"},
        ]
        render(summary, fmt, [("TYPE", "Type"), ("TOTAL", "TotalCount"), ("ACTIVE", "Active"),
                              ("SIZE", "Size"), ("RECLAIMABLE", "Reclaimable")])
        return
    if fmt:
        render([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows], fmt,
               [("REPOSITORY", "Repository")])
        return
    click.echo("Images space usage:\n")
    render(rows, None, [("REPOSITORY", "Repository"), ("TAG", "Tag"), ("IMAGE ID", "ID"),
                        ("CREATED", "CreatedSince"), ("SIZE", "Size"),
                        ("SHARED SIZE", "SharedSize"), ("UNIQUE SIZE", "UniqueSize"),
                        ("CONTAINERS", "Containers")])
    click.echo("\nContainers space usage:\n")
    crow = []
    for c, s in zip(containers, c_sizes, strict=True):
        crow.append({"ID": getattr(c, "short_id", ""),
                     "Image": getattr(c, "image_ref", ""),
                     "Command": '"' + _util.truncate(str(_attr(c, "command_text")), 20) + '"',
                     "LocalVolumes": str(sum(1 for m in getattr(c, "mounts", [])
                                             if getattr(m, "type", "") == "volume")),
                     "Size": human_size(s, 4),
                     "CreatedSince": time_ago(getattr(c, "record", {}).get("created")
                                              if isinstance(getattr(c, "record", None), dict)
                                              else None),
                     "Status": str(_attr(c, "status_text")),
                     "Names": str(getattr(c, "name", ""))})
    render(crow, None, [("CONTAINER ID", "ID"), ("IMAGE", "Image"), ("COMMAND", "Command"),
                        ("LOCAL VOLUMES", "LocalVolumes"), ("SIZE", "Size"),
                        ("CREATED", "CreatedSince"), ("STATUS", "Status"),
                        ("NAMES", "Names")])
    click.echo("\nLocal Volumes space usage:\n")
    vrow = [{"Name": v.name, "Links": str(u), "Size": human_size(s, 4)}
            for v, s, u in zip(volumes, v_sizes, v_users, strict=True)]
    render(vrow, None, [("VOLUME NAME", "Name"), ("LINKS", "Links"), ("SIZE", "Size")])
    click.echo("\nBuild cache usage: 0B\n")
    render([], None, [("CACHE ID", "ID"), ("CACHE TYPE", "Type"), ("SIZE", "Size"),
                      ("CREATED", "Created"), ("LAST USED", "LastUsed"), ("USAGE", "Usage"),
                      ("SHARED", "Shared")])


@system.command("prune", context_settings=_CTX)
@click.option("-a", "--all", "all_images", is_flag=True,
              help="Remove all unused images not just dangling ones")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@click.option("--volumes", is_flag=True, help="Prune anonymous volumes")
@click.option("--filter", "filters", multiple=True, help="Provide filter values (ignored)")
@click.pass_context
def prune(ctx: click.Context, all_images: bool, force: bool, volumes: bool,
          filters: tuple[str, ...]) -> None:
    """Remove stopped containers, dangling images (all unused ones with -a) and, with
    --volumes, unused anonymous volumes; then unreferenced blobs and layers."""
    lines = ["WARNING! This will remove:", "  - all stopped containers"]
    if volumes:
        lines.append("  - all anonymous volumes not used by at least one container")
    lines.append("  - all images without at least one container associated to them"
                 if all_images else "  - all dangling images")
    if not _util.confirm("\n".join(lines) + "\n", force):
        return
    store = store_of(ctx)
    reclaimed = 0
    removed_containers = []
    for c in _containers(store):
        if getattr(c, "running", False):
            continue
        try:
            from ..container import ContainerStore
            reclaimed += _size(c, "size_rw")
            ContainerStore(store).remove(c.id)
            removed_containers.append(c.id)
        except Exception as e:  # keep pruning the rest, as docker does
            click.echo(f"Error: {e}", err=True)
    if removed_containers:
        click.echo("Deleted Containers:")
        for cid in removed_containers:
            click.echo(cid)
        click.echo("")
    if volumes:
        _, cs = _volumes(store)
        if cs is not None:
            names: list[str] = []
            try:
                gone = cs.volumes.prune()
                # VolumeStore.prune returns (names, bytes reclaimed)
                if isinstance(gone, tuple) and len(gone) == 2:
                    names, freed = list(gone[0]), int(gone[1])
                    reclaimed += freed
                else:
                    names = [getattr(v, "name", v) for v in (gone or [])]
            except Exception as e:
                click.echo(f"Error: {e}", err=True)
            if names:
                click.echo("Deleted Volumes:")
                for n in names:
                    click.echo(n)
                click.echo("")
    deleted, gc = store.prune(all_images=all_images)
    if deleted:
        click.echo("Deleted Images:")
        for d in deleted:
            click.echo(f"deleted: {d}")
        click.echo("")
    reclaimed += gc.reclaimed
    click.echo(f"Total reclaimed space: {human_size(reclaimed)}")


@click.command("fsck", context_settings=_CTX)
@click.option("--repair", is_flag=True, help="Fix what can be fixed (re-unpack layers, drop "
              "broken records, remove garbage)")
@click.option("--deep", is_flag=True, help="Also compare every unpacked layer with its blob")
@click.pass_context
def fsck(ctx: click.Context, repair: bool, deep: bool) -> None:
    """Check the store for corrupt blobs, broken images, missing layers and garbage."""
    report = store_of(ctx).fsck(repair=repair, deep=deep)
    for line in report.problems:
        mark = "repaired: " if line in report.repaired else ""
        click.echo(f"{mark}{line}")
    click.echo(f"checked {report.blobs} blobs, {report.images} images, {report.layers} "
               f"layers: {len(report.problems)} problems, {len(report.repaired)} repaired")
    if not report.clean:
        ctx.exit(1)


system.add_command(fsck, "fsck")
