"""Image commands, with docker's names, flags and output: ``images``, ``image`` (``ls``,
``inspect``, ``history``, ``tag``, ``rm``, ``prune``, ``save``, ``load``, ``import``,
``layers``), ``history``, ``tag``, ``rmi``, ``save``, ``load``, ``import``, ``layers``,
``search``, ``samples``. Each parses, calls one library function, formats the result."""

from __future__ import annotations

import fnmatch
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from . import _util
from ._util import human_size, render, store_of, time_ago, truncate

_CTX = {"help_option_names": ["-h", "--help"]}


# -- images / image ls ---------------------------------------------------------------------

def _image_rows(store: Any, *, show_all: bool, digests: bool, no_trunc: bool,
                filters: tuple[str, ...], repo_filter: str | None) -> list[dict[str, Any]]:
    dangling: bool | None = None
    refs: list[str] = []
    for f in filters:
        key, _, value = f.partition("=")
        if key == "dangling":
            dangling = value.lower() in ("true", "1")
        elif key == "reference":
            refs.append(value)
        elif key in ("label", "before", "since"):
            continue
        else:
            raise click.UsageError(f"invalid filter '{key}'")
    rows = []
    for rec in store.images():
        img = rec.image
        image_id = str(img.id) if no_trunc else img.id.short
        created = img.created
        base = {"ID": image_id, "CreatedSince": time_ago(created),
                "CreatedAt": _util.docker_time(created), "Size": human_size(rec.size),
                "VirtualSize": human_size(rec.size), "SharedSize": "N/A",
                "UniqueSize": "N/A", "Containers": str(len(rec.pinned_by)) if rec.pinned_by
                else "N/A"}
        # docker's DIGEST column: the repository digest recorded when the image was pulled
        # or pushed (RepoDigests), "<none>" for a built, committed or loaded one
        by_repo = {r.familiar_name: r.digest for r in store.repo_digests(img)}
        entries = [(t.familiar_name, t.tag or "<none>") for t in rec.tags]
        # a repository known only by digest (pulled as ubuntu@sha256:...) is a row too
        tagged = {repo for repo, _ in entries}
        entries += [(repo, "<none>") for repo in sorted(by_repo) if repo not in tagged]
        entries = entries or [("<none>", "<none>")]
        if dangling is True and rec.tags:
            continue
        if dangling is False and not rec.tags:
            continue
        for repo, tag in entries:
            if repo_filter is not None:
                want_repo, _, want_tag = repo_filter.partition(":")
                if repo != want_repo and not fnmatch.fnmatch(repo, want_repo):
                    continue
                if want_tag and tag != want_tag:
                    continue
            if refs and not any(fnmatch.fnmatch(f"{repo}:{tag}", p) or
                                fnmatch.fnmatch(repo, p) for p in refs):
                continue
            row = dict(base, Repository=repo, Tag=tag,
                       Digest=by_repo.get(repo) or "<none>")
            rows.append(row)
    return rows


def _ls(ctx: click.Context, repository: str | None, show_all: bool, digests: bool,
        quiet: bool, no_trunc: bool, fmt: str | None, filters: tuple[str, ...]) -> None:
    store = store_of(ctx)
    rows = _image_rows(store, show_all=show_all, digests=digests, no_trunc=no_trunc,
                       filters=filters, repo_filter=repository)
    columns = [("REPOSITORY", "Repository"), ("TAG", "Tag")]
    if digests:
        columns.append(("DIGEST", "Digest"))
    columns += [("IMAGE ID", "ID"), ("CREATED", "CreatedSince"), ("SIZE", "Size")]
    if quiet:
        for r in rows:  # one id per row, repeated for several tags, as docker prints
            click.echo(r["ID"])
        return
    render(rows, fmt, columns)


_LS_OPTIONS = [
    click.argument("repository", required=False),
    click.option("-a", "--all", "show_all", is_flag=True,
                 help="Show all images (default hides intermediate images)"),
    click.option("--digests", is_flag=True, help="Show digests"),
    click.option("-f", "--filter", "filters", multiple=True,
                 help="Filter output based on conditions provided (dangling=true, "
                      "reference=PATTERN)"),
    click.option("--format", "fmt", help="Format output using a custom template: 'table', "
                 "'table TEMPLATE', 'json', or a Go template"),
    click.option("--no-trunc", is_flag=True, help="Don't truncate output"),
    click.option("-q", "--quiet", is_flag=True, help="Only show image IDs"),
]


def _with(options: list[Any]):
    def deco(f):
        for o in reversed(options):
            f = o(f)
        return f
    return deco


@click.command("images", context_settings=_CTX)
@_with(_LS_OPTIONS)
@click.pass_context
def images(ctx: click.Context, repository: str | None, show_all: bool, digests: bool,
           filters: tuple[str, ...], fmt: str | None, no_trunc: bool, quiet: bool) -> None:
    """List images."""
    _ls(ctx, repository, show_all, digests, quiet, no_trunc, fmt, filters)


class _ImageGroup(click.Group):
    """``image`` subcommands; ``image pull`` / ``image push`` come from the registry
    commands when that module is present."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None and cmd_name in ("pull", "push"):
            import importlib
            try:
                mod = importlib.import_module(f"{__package__}.registry")
            except ImportError:
                return None
            return getattr(mod, cmd_name, None)
        return cmd

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        import importlib.util
        if importlib.util.find_spec(f"{__package__}.registry") is not None:
            names.update(("pull", "push"))
        return sorted(names)


@click.group("image", cls=_ImageGroup, context_settings=_CTX)
def image() -> None:
    """Manage images."""


@image.command("ls", context_settings=_CTX)
@_with(_LS_OPTIONS)
@click.pass_context
def image_ls(ctx: click.Context, repository: str | None, show_all: bool, digests: bool,
             filters: tuple[str, ...], fmt: str | None, no_trunc: bool, quiet: bool) -> None:
    """List images."""
    _ls(ctx, repository, show_all, digests, quiet, no_trunc, fmt, filters)


image.add_command(image_ls, "list")


# -- inspect -------------------------------------------------------------------------------

def inspect_image(store: Any, text: str) -> dict[str, Any]:
    """The ``docker image inspect`` object for one image."""
    img = store.resolve(text)
    tags = store.tags_of(img)
    layer_dirs = store.lower_dirs(img)
    cfg = img.config
    hist = img.history
    comment = hist[-1].get("comment", "") if hist else ""
    size = sum(store.layer_size(d) for d in dict.fromkeys(img.diff_ids))
    graph: dict[str, Any] = {"Name": "overlay2", "Data": {}}
    if layer_dirs:
        graph["Data"] = {"UpperDir": layer_dirs[0]}
        if len(layer_dirs) > 1:
            graph["Data"]["LowerDir"] = ":".join(layer_dirs[1:])
    repo_digests = [str(r) for r in store.repo_digests(img)]
    return {
        "Id": str(img.id),
        "RepoTags": [str(t) for t in tags],
        "RepoDigests": repo_digests,
        "Parent": "",
        "Comment": comment,
        "Created": img.created or "",
        "DockerVersion": cfg.get("docker_version", ""),
        "Author": cfg.get("author", ""),
        "Config": img.runtime_config,
        "Architecture": img.architecture,
        "Os": img.os,
        "Size": size,
        "GraphDriver": graph,
        "RootFS": {"Type": "layers", "Layers": [str(d) for d in img.diff_ids]},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
        "Descriptor": {"mediaType": img.media_type, "digest": str(img.digest),
                       "size": len(img.manifest_bytes)},
    }


@image.command("inspect", context_settings=_CTX)
@click.argument("names", nargs=-1, required=True)
@click.option("-f", "--format", "fmt", help="Format output using a Go template, or 'json'")
@click.pass_context
def image_inspect(ctx: click.Context, names: tuple[str, ...], fmt: str | None) -> None:
    """Display detailed information on one or more images."""
    from ..errors import ImageSimError
    store = store_of(ctx)
    found, missing = [], []
    for n in names:
        try:
            found.append(inspect_image(store, n))
        except ImageSimError:
            missing.append(n)
    if fmt and fmt != "json":
        for obj in found:
            click.echo(_util.template(fmt, obj))
    else:
        _util.print_json(found)
    if missing:
        for n in missing:
            click.echo(f"Error: No such image: {n}", err=True)
        ctx.exit(1)


# -- history -------------------------------------------------------------------------------

def history_rows(store: Any, text: str, *, no_trunc: bool = False,
                 human: bool = True) -> list[dict[str, Any]]:
    """``docker history`` rows, newest first. The top row shows the image id; rows that
    end where another local image ends show that image's id (as for a parent after a
    commit); the others ``<missing>``."""
    img = store.resolve(text)
    rows_oldest = img.history_rows()
    # local images by (history length, diff ids): an intermediate row names one of them
    known: dict[tuple[int, tuple[str, ...]], str] = {}
    for rec in store.images():
        other = rec.image
        if other.digest == img.digest:
            continue
        n = len(other.history) or len(other.diff_ids)
        known[(n, tuple(str(d) for d in other.diff_ids))] = str(other.id)
    out = []
    layers_so_far: list[str] = []
    for i, (row, layer_index) in enumerate(rows_oldest):
        if layer_index is not None:
            layers_so_far.append(str(img.diff_ids[layer_index]))
        if i == len(rows_oldest) - 1:
            ident = str(img.id)
        else:
            ident = known.get((i + 1, tuple(layers_so_far)), "<missing>")
        size = store.layer_size(img.diff_ids[layer_index]) if layer_index is not None else 0
        created_by = row.get("created_by", "")
        created = row.get("created") or img.created
        out.append({
            "ID": ident if no_trunc or ident == "<missing>" else ident.split(":")[-1][:12],
            "CreatedSince": time_ago(created) if human else (created or ""),
            "CreatedAt": created or "",
            "CreatedBy": created_by if no_trunc else truncate(
                created_by.replace("\t", " ").replace("\n", " "), 45),
            "Size": human_size(size) if human else str(size),
            "Comment": row.get("comment", ""),
        })
    out.reverse()
    return out


def _history(ctx: click.Context, name: str, no_trunc: bool, quiet: bool, human: bool,
             fmt: str | None) -> None:
    rows = history_rows(store_of(ctx), name, no_trunc=no_trunc, human=human)
    render(rows, fmt, [("IMAGE", "ID"), ("CREATED", "CreatedSince"),
                       ("CREATED BY", "CreatedBy"), ("SIZE", "Size"), ("COMMENT", "Comment")],
           quiet=quiet, quiet_field="ID")


_HISTORY_OPTIONS = [
    click.argument("name"),
    click.option("--format", "fmt", help="Format output using a custom template"),
    click.option("-H", "--human", type=bool, default=True, show_default=True,
                 help="Print sizes and dates in human readable format"),
    click.option("--no-trunc", is_flag=True, help="Don't truncate output"),
    click.option("-q", "--quiet", is_flag=True, help="Only show image IDs"),
]


@click.command("history", context_settings=_CTX)
@_with(_HISTORY_OPTIONS)
@click.pass_context
def history(ctx: click.Context, name: str, fmt: str | None, human: bool, no_trunc: bool,
            quiet: bool) -> None:
    """Show the history of an image."""
    _history(ctx, name, no_trunc, quiet, human, fmt)


@image.command("history", context_settings=_CTX)
@_with(_HISTORY_OPTIONS)
@click.pass_context
def image_history(ctx: click.Context, name: str, fmt: str | None, human: bool,
                  no_trunc: bool, quiet: bool) -> None:
    """Show the history of an image."""
    _history(ctx, name, no_trunc, quiet, human, fmt)


# -- tag, rmi, prune -------------------------------------------------------------------------

@click.command("tag", context_settings=_CTX)
@click.argument("source")
@click.argument("target")
@click.pass_context
def tag(ctx: click.Context, source: str, target: str) -> None:
    """Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE."""
    store_of(ctx).tag(source, target)


image.add_command(tag, "tag")


def _running_containers(store: Any) -> Callable[[str], bool]:
    """A predicate: does the container with this id run? (rmi's "cannot be forced")."""
    from ..container import ContainerStore
    running = {c.id for c in ContainerStore(store).list(all=True) if c.running}
    return running.__contains__


def _rmi(ctx: click.Context, names: tuple[str, ...], force: bool, no_prune: bool) -> None:
    store = store_of(ctx)
    running = _running_containers(store)

    def one(name: str) -> None:
        result = store.remove(name, force=force, prune=not no_prune, running=running)
        for t in result.untagged:
            click.echo(f"Untagged: {t}")
        for d in result.deleted:
            click.echo(f"Deleted: {d}")

    if _util.each(names, one):
        ctx.exit(1)


_RMI_OPTIONS = [
    click.argument("names", nargs=-1, required=True),
    click.option("-f", "--force", is_flag=True, help="Force removal of the image"),
    click.option("--no-prune", is_flag=True, help="Do not delete untagged parents"),
]


@click.command("rmi", context_settings=_CTX)
@_with(_RMI_OPTIONS)
@click.pass_context
def rmi(ctx: click.Context, names: tuple[str, ...], force: bool, no_prune: bool) -> None:
    """Remove one or more images."""
    _rmi(ctx, names, force, no_prune)


@image.command("rm", context_settings=_CTX)
@_with(_RMI_OPTIONS)
@click.pass_context
def image_rm(ctx: click.Context, names: tuple[str, ...], force: bool, no_prune: bool) -> None:
    """Remove one or more images."""
    _rmi(ctx, names, force, no_prune)


image.add_command(image_rm, "remove")


@image.command("prune", context_settings=_CTX)
@click.option("-a", "--all", "all_images", is_flag=True,
              help="Remove all unused images, not just dangling ones")
@click.option("-f", "--force", is_flag=True, help="Do not prompt for confirmation")
@click.option("--filter", "filters", multiple=True, help="Provide filter values (ignored)")
@click.pass_context
def image_prune(ctx: click.Context, all_images: bool, force: bool,
                filters: tuple[str, ...]) -> None:
    """Remove unused images."""
    warning = ("WARNING! This will remove all images without at least one container "
               "associated to them." if all_images else
               "WARNING! This will remove all dangling images.")
    if not _util.confirm(warning, force):
        return
    deleted, gc = store_of(ctx).prune(all_images=all_images)
    if deleted:
        click.echo("Deleted Images:")
        for d in deleted:
            click.echo(f"deleted: {d}")
        click.echo("")
    click.echo(f"Total reclaimed space: {human_size(gc.reclaimed)}")


# -- save, load, import ----------------------------------------------------------------------

def _save(ctx: click.Context, names: tuple[str, ...], output: str | None,
          oci_dir: str | None) -> None:
    from .. import archive
    store = store_of(ctx)
    if oci_dir:
        archive.save_oci_dir(store, names, oci_dir)
        return
    if output is None or output == "-":
        if sys.stdout.isatty():
            raise click.UsageError("cowardly refusing to save to a terminal. Use the -o flag "
                                   "or redirect")
        archive.save(store, names, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    from ..progress import byte_progress
    total = 0
    for item in archive._select(store, names):
        total += sum(d.size for d in item.image.layers)
    with byte_progress("Saving", total) as advance:
        archive.save_to_file(store, names, output, progress=advance)


_SAVE_OPTIONS = [
    click.argument("names", nargs=-1, required=True),
    click.option("-o", "--output", help="Write to a file, instead of STDOUT"),
    click.option("--oci-dir", type=click.Path(file_okay=False),
                 help="Write an OCI image layout directory instead of a tar"),
]


@click.command("save", context_settings=_CTX)
@_with(_SAVE_OPTIONS)
@click.pass_context
def save(ctx: click.Context, names: tuple[str, ...], output: str | None,
         oci_dir: str | None) -> None:
    """Save one or more images to a tar archive (an OCI layout and a docker-archive at once;
    streamed to STDOUT by default)."""
    _save(ctx, names, output, oci_dir)


image.add_command(save, "save")


def _load(ctx: click.Context, input_: str | None, quiet: bool) -> None:
    from .. import archive
    store = store_of(ctx)
    if input_ is None or input_ == "-":
        if sys.stdin.isatty():
            raise click.UsageError("requested load from stdin, but stdin is empty")
        archive.load(store, sys.stdin.buffer, sys.stdout, quiet=quiet)
    else:
        if not os.path.exists(input_):
            raise click.ClickException(f"open {input_}: no such file or directory")
        if os.path.isdir(input_):
            archive.load(store, input_, sys.stdout, quiet=quiet)
            return
        from ..progress import byte_progress
        with open(input_, "rb") as raw, \
                byte_progress("Loading", os.path.getsize(input_)) as advance:
            archive.load(store, _Counting(raw, advance), sys.stdout, quiet=quiet)


class _Counting:
    """A binary reader that reports how many bytes went by (for the progress bar)."""

    def __init__(self, raw: Any, advance: Any) -> None:
        self.raw = raw
        self.advance = advance

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.advance(len(data))
        return data

    def readable(self) -> bool:
        return True


_LOAD_OPTIONS = [
    click.option("-i", "--input", "input_", help="Read from tar archive file (or an OCI "
                 "layout directory), instead of STDIN"),
    click.option("-q", "--quiet", is_flag=True, help="Suppress the load output"),
]


@click.command("load", context_settings=_CTX)
@_with(_LOAD_OPTIONS)
@click.pass_context
def load(ctx: click.Context, input_: str | None, quiet: bool) -> None:
    """Load an image from a tar archive or STDIN (docker-archive of any era, oci-archive,
    OCI layout directory; plain, gzip or zstd)."""
    _load(ctx, input_, quiet)


image.add_command(load, "load")


@click.command("import", context_settings=_CTX)
@click.argument("source")
@click.argument("reference", required=False)
@click.option("-c", "--change", "changes", multiple=True,
              help="Apply Dockerfile instruction to the created image")
@click.option("-m", "--message", help="Set commit message for imported image")
@click.option("--platform", help="Set platform if server is multi-platform capable")
@click.pass_context
def import_(ctx: click.Context, source: str, reference: str | None, changes: tuple[str, ...],
            message: str | None, platform: str | None) -> None:
    """Import the contents from a tarball (or a directory) to create a filesystem image."""
    from .. import archive
    if source.startswith(("http://", "https://")):
        raise click.ClickException("importing from a URL is not supported (offline)")
    if source != "-" and not os.path.exists(source):
        raise click.ClickException(f"open {source}: no such file or directory")
    img = archive.import_(store_of(ctx), source, reference, changes=changes, message=message,
                          platform=platform)
    click.echo(str(img.id))


image.add_command(import_, "import")


# -- layers ----------------------------------------------------------------------------------

def layer_rows(store: Any, text: str) -> list[dict[str, Any]]:
    """One row per layer of the image, bottom first: diff id, size, the history row that
    made it, and which other images use the same layer."""
    img = store.resolve(text)
    users: dict[str, list[str]] = {}
    for rec in store.images():
        if rec.image.digest == img.digest:
            continue
        if rec.tags:
            # one name per image: its "latest" tag, else its most specific one
            best = sorted(rec.tags, key=lambda t: (t.tag != "latest", -len(t.tag or ""),
                                                   str(t)))[0]
            name = str(best)
        else:
            name = rec.image.id.short
        for d in set(rec.image.diff_ids):
            users.setdefault(str(d), []).append(name)
    created_by: dict[int, str] = {}
    for row, idx in img.history_rows():
        if idx is not None:
            created_by[idx] = row.get("created_by", "")
    rows = []
    for i, (desc, diff_id) in enumerate(zip(img.layers, img.diff_ids, strict=True)):
        rows.append({
            "Index": str(i),
            "DiffID": str(diff_id),
            "ShortDiffID": diff_id.hex[:12],
            "Digest": str(desc.digest),
            "Size": human_size(store.layer_size(diff_id)),
            "CompressedSize": human_size(desc.size),
            "CreatedBy": created_by.get(i, ""),
            "SharedWith": ", ".join(sorted(users.get(str(diff_id), []))) or "-",
            "Dir": store.layer_dir(diff_id),
        })
    return rows


def _layers(ctx: click.Context, name: str, files: bool, no_trunc: bool, fmt: str | None,
            limit: int) -> None:
    store = store_of(ctx)
    if files:
        from .. import teach
        click.echo("\n".join(teach.format_layer_files(teach.layer_files(store, name),
                                                      limit=limit)))
        return
    rows = layer_rows(store, name)
    if not no_trunc:
        for r in rows:
            r["CreatedBy"] = truncate(r["CreatedBy"].replace("\t", " "), 45)
    render(rows, fmt, [("#", "Index"), ("DIFF ID", "DiffID" if no_trunc else "ShortDiffID"),
                       ("SIZE", "Size"), ("CREATED BY", "CreatedBy"),
                       ("SHARED WITH", "SharedWith")])


_LAYERS_OPTIONS = [
    click.argument("name"),
    click.option("--files", is_flag=True, help="Per layer: files added, changed, removed, "
                 "and bytes wasted"),
    click.option("--no-trunc", is_flag=True, help="Don't truncate output"),
    click.option("--format", "fmt", help="Format output using a custom template"),
    click.option("--limit", type=int, default=20, show_default=True,
                 help="With --files: paths listed per layer"),
]


@click.command("layers", context_settings=_CTX)
@_with(_LAYERS_OPTIONS)
@click.pass_context
def layers(ctx: click.Context, name: str, files: bool, no_trunc: bool, fmt: str | None,
           limit: int) -> None:
    """Show an image's layers: diff id, size, the instruction that made each, and which
    other images share it."""
    _layers(ctx, name, files, no_trunc, fmt, limit)


image.add_command(layers, "layers")


# -- search, samples -----------------------------------------------------------------------

@click.command("search", context_settings=_CTX)
@click.argument("term")
@click.option("-f", "--filter", "filters", multiple=True,
              help="Filter output based on conditions provided (stars=N, is-official=true)")
@click.option("--format", "fmt", help="Pretty-print search using a Go template")
@click.option("--limit", type=int, default=25, show_default=True, help="Max number of "
              "search results")
@click.option("--no-trunc", is_flag=True, help="Don't truncate output")
def search(term: str, filters: tuple[str, ...], fmt: str | None, limit: int,
           no_trunc: bool) -> None:
    """Search the built-in library for images (offline: Docker Hub is not reachable)."""
    from .. import library
    results = library.search(term)
    for f in filters:
        key, _, value = f.partition("=")
        if key == "stars":
            results = [r for r in results if r.stars >= int(value or 0)]
        elif key == "is-official":
            results = [r for r in results if r.official == (value.lower() == "true")]
        elif key == "is-automated":
            results = [] if value.lower() == "true" else results
        else:
            raise click.UsageError(f"invalid filter '{key}'")
    rows = [{"Name": r.name,
             "Description": r.description if no_trunc else truncate(r.description, 45),
             "StarCount": str(r.stars), "IsOfficial": "[OK]" if r.official else "",
             "IsAutomated": ""} for r in results[:limit]]
    render(rows, fmt, [("NAME", "Name"), ("DESCRIPTION", "Description"),
                       ("STARS", "StarCount"), ("OFFICIAL", "IsOfficial")])


@click.command("samples", context_settings=_CTX)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing")
@click.pass_context
def samples(ctx: click.Context, quiet: bool) -> None:
    """Load every image of the built-in library (ubuntu, tomcat, mysql:5.7, redis:6.0.8,
    registry, ...) into the store at once."""
    import io

    from .. import library
    out = io.StringIO() if quiet else sys.stdout
    store = store_of(ctx)
    for img in library.load_all(store, out):
        # as if pulled: each keeps its repository digest (RepoDigests, rmi's
        # "Untagged: ubuntu@sha256:...")
        for ref in store.tags_of(img):
            store.add_repo_digest(ref, img.digest)
