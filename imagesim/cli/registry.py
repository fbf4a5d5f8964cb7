"""``imagesim registry serve|gc``, ``pull``, ``push``, ``login``, ``logout``: parse arguments,
call one library function, print its result. Errors are turned into messages by ``main``."""

from __future__ import annotations

import os
import sys

import click


def _store(ctx: click.Context):  # -> imagesim.store.Store (imported lazily for fast --help)
    from ..store import Store
    return Store((ctx.obj or {}).get("root"))


def _reporter(quiet: bool):
    from ..registry.client import reporter_for
    return reporter_for(sys.stdout, quiet=quiet)


@click.group("registry")
def registry() -> None:
    """Run a private registry (an OCI distribution server), or clean one up."""


@registry.command("serve")
@click.option("--addr", default="127.0.0.1:5000", show_default=True,
              help="HOST:PORT to listen on.")
@click.option("--root", "reg_root", type=click.Path(file_okay=False), default=None,
              help="Where the registry stores blobs and repositories "
                   "[default: ROOT/registry of the local store].")
@click.option("--htpasswd", type=click.Path(dir_okay=False, exists=True), default=None,
              help="An htpasswd file of bcrypt entries (htpasswd -B); turns on auth.")
@click.option("--auth", type=click.Choice(["none", "basic", "token"]), default=None,
              help="Auth scheme: basic (default with --htpasswd) or token (Bearer tokens from "
                   "/token, as Docker Hub does).")
@click.option("--anonymous-pull", is_flag=True,
              help="With --auth token: let callers without credentials pull.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True), default=None,
              envvar="REGISTRY_HTTP_TLS_CERTIFICATE",
              help="Serve HTTPS with this PEM certificate (chain); needs --tls-key. Docker's "
                   "registry calls it http.tls.certificate [env: "
                   "REGISTRY_HTTP_TLS_CERTIFICATE].")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True), default=None,
              envvar="REGISTRY_HTTP_TLS_KEY",
              help="The PEM private key of --tls-cert (http.tls.key) [env: "
                   "REGISTRY_HTTP_TLS_KEY].")
@click.option("--upload-expiry", metavar="DURATION", default=None,
              help="Remove upload sessions left unfinished this long (Go durations: 168h, "
                   "30m, 90s) [default: 24h; env REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE; "
                   "docker's registry calls it storage.maintenance.uploadpurging.age].")
@click.option("--upload-purge-interval", metavar="DURATION", default=None,
              help="How often to look for expired uploads [default: 1h; env "
                   "REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_INTERVAL].")
@click.option("--quiet", "-q", is_flag=True, help="No per-request log lines on stderr.")
@click.pass_context
def serve_cmd(ctx: click.Context, addr: str, reg_root: str | None, htpasswd: str | None,
              auth: str | None, anonymous_pull: bool, tls_cert: str | None,
              tls_key: str | None, upload_expiry: str | None,
              upload_purge_interval: str | None, quiet: bool) -> None:
    """Serve a registry until interrupted (what `docker run -p 5000:5000 registry` runs).

    With --tls-cert/--tls-key it serves HTTPS. Clients trust it when its CA certificate is in
    their system store or in certs.d/HOST:PORT/ca.crt next to their config file (for
    imagesim: ~/.config/imagesim/certs.d/HOST:PORT/ca.crt, as docker's
    /etc/docker/certs.d), or when they list HOST:PORT as an insecure registry."""
    from ..registry.server import check_tls_files, parse_addr, serve
    from ..registry.storage import parse_duration
    durations: dict[str, float | None] = {}
    for name, text in (("--upload-expiry", upload_expiry),
                       ("--upload-purge-interval", upload_purge_interval)):
        try:
            durations[name] = parse_duration(text) if text is not None else None
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint=name) from None
    root = reg_root or os.path.join((ctx.obj or {}).get("root") or ".", "registry")
    if auth in ("basic", "token") and htpasswd is None:
        raise click.UsageError(f"--auth {auth} needs --htpasswd FILE")
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    try:
        host, port = parse_addr(addr)
        check_tls_files(tls_cert, tls_key)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    scheme = "https" if tls_cert else "http"
    click.echo(f"registry: serving {os.path.abspath(root)} on {scheme}://{host}:{port}/v2/ "
               f"(auth: {auth or ('basic' if htpasswd else 'none')})", err=True)
    serve(f"{host}:{port}", root, htpasswd=htpasswd, auth=auth, anonymous_pull=anonymous_pull,
          access_log=not quiet, tls_cert=tls_cert, tls_key=tls_key,
          upload_expiry=durations["--upload-expiry"],
          upload_purge_interval=durations["--upload-purge-interval"])


@registry.command("gc")
@click.option("--root", "reg_root", type=click.Path(file_okay=False), default=None,
              help="The registry's storage directory [default: ROOT/registry].")
@click.option("--dry-run", "-n", is_flag=True, help="Only list what would be removed.")
@click.pass_context
def gc_cmd(ctx: click.Context, reg_root: str | None, dry_run: bool) -> None:
    """Remove blobs no manifest references (run it while nothing is pushing)."""
    from ..registry.storage import RegistryStorage
    root = reg_root or os.path.join((ctx.obj or {}).get("root") or ".", "registry")
    if not os.path.isdir(root):
        raise click.UsageError(f"no registry storage at {root}")
    result = RegistryStorage(root).gc(dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for digest in result.removed:
        click.echo(f"{verb} blob {digest}")
    click.echo(f"{len(result.removed)} blobs {verb} ({result.freed_bytes} bytes), "
               f"{result.kept} kept, {result.uploads_removed} stale uploads removed")


@click.command("pull")
@click.argument("name")
@click.option("--platform", default=None, help="OS/ARCH to pick from a multi-platform image.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the image reference.")
@click.pass_context
def pull(ctx: click.Context, name: str, platform: str | None, quiet: bool) -> None:
    """Pull an image: from its registry (HOST[:PORT]/PATH[:TAG]), or from the built-in library
    when the name has no registry host (ubuntu, redis:6.0.8).

    Registries are reached over HTTPS, verified against the system's CA store and
    certs.d/HOST:PORT/*.crt next to the config file; plain HTTP only for localhost,
    127.0.0.0/8 and the config's insecure-registries (see `imagesim login --help`)."""
    from ..reference import Reference
    ref = Reference.parse(name)
    store = _store(ctx)
    if ref.registry_host is None:
        from .. import library
        library.pull(store, ref, sys.stdout, quiet=quiet)
        return
    from ..registry.client import parse_platform
    from ..registry.client import pull as do_pull
    try:
        plat = parse_platform(platform) if platform else None
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    result = do_pull(store, ref, reporter=_reporter(quiet), platform=plat)
    if quiet:
        click.echo(ref.full if ref.digest is None else f"{ref.name}@{result.digest}")


@click.command("push")
@click.argument("name")
@click.option("-q", "--quiet", is_flag=True, help="Print only the pushed digest.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=None, hidden=True,
              help="Upload blobs larger than this many bytes in chunks of this size.")
@click.pass_context
def push(ctx: click.Context, name: str, quiet: bool, chunk_size: int | None) -> None:
    """Push an image to the registry in its name (tag it HOST:PORT/NAME:TAG first).

    Registries are reached over HTTPS, verified against the system's CA store and
    certs.d/HOST:PORT/*.crt next to the config file; plain HTTP only for localhost,
    127.0.0.0/8 and the config's insecure-registries (see `imagesim login --help`)."""
    from ..reference import Reference
    from ..registry.client import DEFAULT_CHUNK_SIZE
    from ..registry.client import push as do_push
    ref = Reference.parse(name)
    result = do_push(_store(ctx), ref, reporter=_reporter(quiet),
                     chunk_size=chunk_size or DEFAULT_CHUNK_SIZE)
    if quiet:
        click.echo(str(result.digest))


@click.command("login")
@click.argument("server", required=False)
@click.option("-u", "--username", default=None)
@click.option("-p", "--password", default=None)
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
def login(server: str | None, username: str | None, password: str | None,
          password_stdin: bool) -> None:
    """Log in to a registry; the credentials are stored in the config file (auths).

    \b
    The config file is ~/.config/imagesim/config.json ($IMAGESIM_CONFIG), docker's
    ~/.docker/config.json and daemon.json in one:
      {"auths": {"HOST:PORT": {"auth": "base64(user:password)"}},
       "insecure-registries": ["HOST:PORT", "10.1.0.0/16"]}
    \b
    Transport, as docker: HTTPS, with the certificate verified against the system's CA
    store plus certs.d/HOST:PORT/*.crt in the config file's directory
    (~/.config/imagesim/certs.d/HOST:PORT/ca.crt, like /etc/docker/certs.d); a
    certs.d/HOST:PORT/NAME.cert + NAME.key pair is sent as a client certificate.
    Plain HTTP only for localhost, 127.0.0.0/8 and insecure-registries; for those an
    HTTPS registry is used without verifying its certificate."""
    from ..registry.client import login as do_login
    if not server:
        raise click.UsageError("no registry given: Docker Hub is not reachable here; "
                               "name the registry, e.g. `imagesim login 127.0.0.1:5000`")
    if password_stdin:
        if password is not None:
            raise click.UsageError("--password and --password-stdin are mutually exclusive")
        if username is None:
            raise click.UsageError("must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    elif password is not None:
        click.echo("WARNING! Using --password via the CLI is insecure. Use --password-stdin.",
                   err=True)
    if username is None:
        username = click.prompt("Username")
    if password is None:
        password = click.prompt("Password", hide_input=True)
    cfg = do_login(server, username, password)
    click.echo(f"WARNING! Your password will be stored unencrypted in {cfg.path}.", err=True)
    click.echo("Login Succeeded")


@click.command("logout")
@click.argument("server", required=False)
def logout(server: str | None) -> None:
    """Forget the stored credentials of a registry."""
    from ..registry.client import logout as do_logout
    if not server:
        raise click.UsageError("name the registry to log out from")
    if do_logout(server):
        click.echo(f"Removing login credentials for {server}")
    else:
        click.echo(f"Not logged in to {server}")


