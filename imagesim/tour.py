"""The guided lesson (``imagesim tour``, what ``make demo`` runs).

The lesson of ``shared/lesson`` with ``imagesim`` in place of ``docker``: every step runs the
real command in-process through ``imagesim.cli.main`` (its output captured and shown as it
is), then says in two or three sentences what just happened in the layers, and checks the
result. A step whose command fails when it should not, or whose output lacks what the lesson
relies on, is reported as FAILED and the tour exits with status 1, so the tour doubles as an
end-to-end test. A step whose command does not exist in this build is reported as SKIPPED.

Lessons (``imagesim tour --list``): layers (pull, sharing, history, graph, which), union
(copy-up, whiteouts, diff, tree, --trace), commit (apt-get install vim, commit -m/-a,
history, layers --files), registry (a private registry on 127.0.0.1, tag, push, curl
catalog, pull), volumes (rw, ro, --volumes-from), mysql (data lost without a volume, kept
with one), tomcat (the webapps fix), redis (a config file bound from the host). Choosing a
lesson also runs the lessons it builds on.

Nothing leaves the machine: the images come from the built-in library, the private registry
listens on 127.0.0.1 on a free port, and ``curl`` (the real one when installed) only talks to
it. By default everything happens in a temporary root that is deleted afterwards.

    run_tour(imagesim.cli.main, root=None, lessons=None, pause=False, keep=False,
             out=sys.stdout) -> int
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

#: a check returns None when the step behaved, else what went wrong
Check = Callable[["Result"], str | None]
#: runs one ``imagesim`` command line, returning its exit status (``imagesim.cli.main``)
MainFn = Callable[[Sequence[str]], int]


@dataclass(frozen=True)
class Result:
    status: int
    out: str
    err: str
    mixed: str | None = None     # stdout and stderr in the order written, when known

    @property
    def text(self) -> str:
        return self.out + self.err


@dataclass(frozen=True)
class Step:
    """One step: ``command`` as the learner would type it (``imagesim ...``, ``curl ...``,
    or a host action shown as its shell equivalent), what it teaches, and its checks."""

    command: str
    explain: str
    checks: tuple[Check, ...] = ()
    expect_status: int | None = 0        # None: any non-zero status is expected
    stdin: str | None = None
    action: Callable[[], Result] | None = None   # host steps: done in Python, shown as shell
    max_lines: int = 30


@dataclass(frozen=True)
class Lesson:
    name: str
    title: str
    needs: tuple[str, ...]
    steps: Callable[[TourContext], list[Step]]


@dataclass
class TourContext:
    main: MainFn                 # imagesim.cli.main, handed in by the CLI (import rule)
    has_command: Callable[[str], bool]
    root: str
    host: str                    # a scratch host directory for bind mounts
    port: int                    # the private registry's port on 127.0.0.1
    failures: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    passed: int = 0


# --------------------------------------------------------------------------- checks

def has(*texts: str) -> Check:
    def check(r: Result) -> str | None:
        missing = [t for t in texts if t not in r.text]
        return f"output lacks {missing[0]!r}" if missing else None
    return check


def lacks(*texts: str) -> Check:
    def check(r: Result) -> str | None:
        present = [t for t in texts if t in r.out]
        return f"output unexpectedly shows {present[0]!r}" if present else None
    return check


def min_lines(n: int) -> Check:
    def check(r: Result) -> str | None:
        count = len(r.out.strip().splitlines())
        return None if count >= n else f"expected at least {n} lines, got {count}"
    return check


def out_is(text: str) -> Check:
    def check(r: Result) -> str | None:
        return None if r.out.strip() == text else f"expected {text!r}, got {r.out.strip()!r}"
    return check


def catalog_has(*repos: str, exactly: bool = False) -> Check:
    def check(r: Result) -> str | None:
        try:
            got = json.loads(r.out)["repositories"]
        except (ValueError, KeyError, TypeError):
            return f"not a catalog: {r.out[:80]!r}"
        if exactly and sorted(got) != sorted(repos):
            return f"catalog is {got}, expected {list(repos)}"
        missing = [x for x in repos if x not in got]
        return f"catalog lacks {missing[0]}" if missing else None
    return check


# --------------------------------------------------------------------------- the lessons

def _layers(ctx: TourContext) -> list[Step]:
    return [
        Step("imagesim pull ubuntu",
             "The image arrives as a stack of layers, each a tar of file changes. The store "
             "unpacks every layer once into its own directory, named by the digest of its "
             "content.", (has("Status:"),), max_lines=8),
        Step("imagesim pull tomcat",
             "tomcat is built FROM the same base as ubuntu, so its first layers have the same "
             "digests: they are found in the store and not stored again. Only tomcat's own "
             "layers are added.", (has("Already exists", "Status:"),), max_lines=10),
        Step("imagesim images",
             "Each image is a manifest listing its layers plus a config. The SIZE column adds "
             "up all of an image's layers, so the shared base is counted in both rows even "
             "though it is stored once.", (has("ubuntu", "tomcat"),)),
        Step("imagesim history tomcat",
             "history lists the instructions that built each layer, newest first: the "
             "bottom rows are the shared base.", (has("CREATED"),), max_lines=12),
        Step("imagesim layers tomcat",
             "Layer by layer: the first three are the very same layers as ubuntu's (same "
             "diff ids), shared with it; the rest are tomcat's own.",
             (has("ubuntu:latest"),)),
        Step("imagesim graph",
             "Images drawn over their layers: the base layers appear once, marked as shared "
             "by both images. Every image is just a path through this tree.",
             (has("shared by 2 images", "image ubuntu:latest", "image tomcat:latest"),)),
        Step("imagesim which tomcat /etc/os-release",
             "A file from the base layer: both images read the very same bytes from the one "
             "shared layer directory.", (has("supplied by: [a] layer 1"),)),
    ]


def _union(ctx: TourContext) -> list[Step]:
    return [
        Step("imagesim run -itd --name u1 ubuntu /bin/bash",
             "A container is a new, empty writable layer on top of the image's read-only "
             "layers; the union of all of them is the container's root filesystem. Nothing "
             "is copied when it starts.", ()),
        Step("imagesim exec u1 sh -c 'echo u1 >> /etc/hostname; cat /etc/hostname'",
             "Appending to a file of the image triggers copy-up: the whole file is copied "
             "into the container's writable layer first, then changed there. The image's "
             "layer is never written.", (has("u1"),)),
        Step("imagesim which u1 /etc/hostname",
             "The container's copy now supplies the path and shadows the image's original, "
             "which is still stored (and still used by every other container).",
             (has("supplied by: [+]", "shadows:"),)),
        Step("imagesim which ubuntu /etc/hostname",
             "The image itself is untouched: its layer still supplies the original file.",
             (lacks("[+]"), has("supplied by: [a]"))),
        Step("imagesim exec u1 rm /etc/os-release",
             "Deleting a file that lives in a read-only layer cannot remove it there. "
             "Instead a whiteout is placed in the writable layer: a marker that hides the "
             "name in every layer below.", ()),
        Step("imagesim which u1 /etc/os-release",
             "The path is gone from the view, and which names the whiteout that hides it.",
             (has("whiteout"),), expect_status=None),
        Step("imagesim diff u1",
             "docker diff reads only the writable layer: C for what was changed (and the "
             "parent directories copied up with it), A for added, D for whiteouts.",
             (has("C /etc/hostname", "D /etc/os-release"),)),
        Step("imagesim tree u1 /etc -L 1",
             "The merged tree with each entry's layer letter: a = base, + = the container. "
             "The deleted file is listed with D, hidden by its whiteout.",
             (has("[+]", "os-release"),)),
        Step("imagesim run --rm --trace ubuntu sh -c 'echo x >> /etc/hosts; rm -r /etc/skel'",
             "--trace prints what the engine does as it happens: the parent directory and "
             "the file are copied up before the append; removing a directory of the image "
             "leaves a whiteout for each entry and then for the directory itself.",
             (has("copy-up", "/etc/hosts", "whiteout", "/etc/skel"),)),
    ]


def _commit(ctx: TourContext) -> list[Step]:
    return [
        Step("imagesim exec u1 sh -c 'apt-get update && apt-get -y install vim'",
             "The built-in shell runs apt-get against an offline catalog: the package's "
             "files land in the writable layer, and /var/lib/dpkg/status is copied up and "
             "extended.", (has("Setting up vim"),), max_lines=12),
        Step("imagesim commit -m=\"vim cmd add ok\" -a=\"zzyy\" u1 atguigu/myubuntu:1.3",
             "commit packs the writable layer into one new layer tar (whiteouts become .wh. "
             "entries) and makes a new image: the old layers plus this one.",
             (has("sha256:"),)),
        Step("imagesim history atguigu/myubuntu:1.3",
             "One more row on top, with the author and the comment given to commit; the rows "
             "below are ubuntu's, shared.", (has("vim cmd add ok"),)),
        Step("imagesim images",
             "The new image is listed; its base layers are the same directories ubuntu uses.",
             (has("atguigu/myubuntu", "1.3"),)),
        Step("imagesim layers atguigu/myubuntu:1.3 --files --limit 5",
             "What each layer adds (A), changes (C) and removes (D), as dive shows it. The "
             "top layer is the commit: vim's files and the copied-up dpkg status. Bytes a "
             "lower layer stores but an upper one overwrites or deletes are wasted.",
             (has("Image efficiency score"),), max_lines=40),
        Step("imagesim run --rm atguigu/myubuntu:1.3 which vim",
             "A fresh container of the new image has vim: it comes from the committed layer.",
             (out_is("/usr/bin/vim"),)),
    ]


def _registry(ctx: TourContext) -> list[Step]:
    host = f"127.0.0.1:{ctx.port}"
    data = os.path.join(ctx.host, "myregistry")
    return [
        Step("imagesim pull registry", "The registry image from the built-in library.",
             (has("Status:"),)),
        Step(f"imagesim run -d -p {ctx.port}:5000 -v {data}/:/tmp/registry "
             "--privileged=true --name reg registry",
             "Running the registry image starts a real OCI distribution server on "
             f"127.0.0.1:{ctx.port}, storing into the bound host directory.", ()),
        Step(f"curl -s -XGET http://{host}/v2/_catalog",
             "The registry's catalog: empty so far.", (catalog_has(exactly=True),)),
        Step(f"imagesim tag atguigu/myubuntu:1.3 {host}/zzyyubuntu:1.2",
             "A tag naming a registry host is how docker knows where to push. Tagging "
             "copies nothing: it is another name for the same manifest digest.", ()),
        Step(f"imagesim push {host}/zzyyubuntu:1.2",
             "Push uploads each layer blob the registry lacks, then the config and the "
             "manifest; every digest is checked on arrival. Plain HTTP is allowed because "
             "the registry is on 127.0.0.1.", (has("digest: sha256:"),)),
        Step(f"curl -s -XGET http://{host}/v2/_catalog",
             "The repository now exists in the registry.", (catalog_has("zzyyubuntu"),)),
        Step(f"imagesim rmi {host}/zzyyubuntu:1.2",
             "Remove the local tag, so the next pull really goes to the registry.", ()),
        Step(f"imagesim pull {host}/zzyyubuntu:1.2",
             "Pull fetches the manifest and only the layers the store does not hold: the "
             "base layers are already here.", (has("Status:"),)),
    ]


def _volumes(ctx: TourContext) -> list[Step]:
    hd = os.path.join(ctx.host, "host_data")

    def write_host() -> Result:
        os.makedirs(hd, exist_ok=True)
        with open(os.path.join(hd, "from_host.txt"), "w", encoding="utf-8") as f:
            f.write("written on the host\n")
        return Result(0, "", "")

    def read_host(name: str) -> Callable[[], Result]:
        def act() -> Result:
            try:
                with open(os.path.join(hd, name), encoding="utf-8") as f:
                    return Result(0, f.read(), "")
            except OSError as e:
                return Result(1, "", f"cat: {os.path.join(hd, name)}: {e.strerror}\n")
        return act

    return [
        Step("imagesim pull ubuntu", "The image the containers below start from.",
             (has("Status:"),), max_lines=4),
        Step(f"imagesim run -itd --privileged=true -v {hd}:/tmp/docker_data --name v1 ubuntu",
             "-v binds a host directory over a path of the container. The mount sits above "
             "the union: what is written there never enters the writable layer.", ()),
        Step("imagesim exec v1 sh -c 'echo written in the container > "
             "/tmp/docker_data/from_ctr.txt'",
             "A write inside the container goes straight to the host directory.", ()),
        Step(f"cat {hd}/from_ctr.txt", "Seen on the host at once.",
             (has("written in the container"),), action=read_host("from_ctr.txt")),
        Step(f"echo written on the host > {hd}/from_host.txt",
             "And the other way round: a file written on the host...", (),
             action=write_host),
        Step("imagesim exec v1 cat /tmp/docker_data/from_host.txt",
             "...is visible inside the container.", (has("written on the host"),)),
        Step("imagesim diff v1",
             "diff lists no volume contents: they are not part of the container's layer "
             "and commit would not keep them.", (lacks("from_ctr.txt"),)),
        Step(f"imagesim run -itd --privileged=true -v {hd}:/tmp/docker_data:ro --name v1ro "
             "ubuntu", ":ro makes the same directory read-only inside this container.", ()),
        Step("imagesim exec v1ro sh -c 'echo x > /tmp/docker_data/nope.txt'",
             "Writing fails with EROFS (Read-only file system), as in docker.",
             (has("Read-only file system"),), expect_status=None),
        Step("imagesim run -itd --privileged=true --volumes-from v1 --name v2 ubuntu",
             "--volumes-from copies v1's mount rules: v2 sees the same host directory.", ()),
        Step("imagesim exec v2 cat /tmp/docker_data/from_ctr.txt",
             "Data shared between containers through the volume.",
             (has("written in the container"),)),
        Step("imagesim rm -f v1 v1ro v2",
             "Removing the containers deletes their writable layers...", ()),
        Step(f"cat {hd}/from_ctr.txt", "...but the data in the bound directory survives.",
             (has("written in the container"),), action=read_host("from_ctr.txt")),
    ]


def _mysql(ctx: TourContext) -> list[Step]:
    data = os.path.join(ctx.host, "mysql", "data")
    run_v = (f"imagesim run -d -p 3306:3306 --privileged=true -v {data}:/var/lib/mysql "
             "-e MYSQL_ROOT_PASSWORD=123456 --name mysql mysql:5.7")
    return [
        Step("imagesim pull mysql:5.7", "mysql shares the base layers too: they already "
             "exist in the store when another lesson pulled ubuntu or tomcat.",
             (has("Status:"),), max_lines=8),
        Step("imagesim run -d -p 3306:3306 -e MYSQL_ROOT_PASSWORD=123456 --name m1 mysql:5.7",
             "mysql's image declares /var/lib/mysql a VOLUME, so docker gives this "
             "container an anonymous volume there.", ()),
        Step("imagesim exec m1 sh -c 'echo important row > /var/lib/mysql/db.ibd'",
             "Data written by the database.", ()),
        Step("imagesim rm -f m1", "The container is removed...", ()),
        Step("imagesim run -d -p 3306:3306 -e MYSQL_ROOT_PASSWORD=123456 --name m2 mysql:5.7",
             "...and a new one started the same way gets a new, empty anonymous volume.", ()),
        Step("imagesim exec m2 ls /var/lib/mysql",
             "The row is gone: without a named or bound volume the data went away with the "
             "container.", (lacks("db.ibd"),)),
        Step("imagesim volume ls",
             "Two anonymous volumes: m2's new, empty one, and m1's, which still exists "
             "(rm without -v keeps it) but which nothing will ever mount again.",
             (has("DRIVER"), min_lines(3))),
        Step("imagesim rm -f m2", "Clean up.", ()),
        Step(run_v, "Now with the data directory bound to the host.", ()),
        Step("imagesim exec mysql sh -c 'echo important row > /var/lib/mysql/db.ibd'",
             "The write goes to the host directory.", ()),
        Step("imagesim rm -f mysql", "The container is removed, again.", ()),
        Step(run_v, "The same command, a new container...", ()),
        Step("imagesim exec mysql cat /var/lib/mysql/db.ibd",
             "...and the data is still there: it lives on the host.",
             (has("important row"),)),
        Step("imagesim rm -f mysql", "Clean up.", ()),
    ]


def _tomcat(ctx: TourContext) -> list[Step]:
    return [
        Step("imagesim run -d -p 8080:8080 --name t1 tomcat",
             "The official tomcat image ships an empty webapps directory (the default apps "
             "are in webapps.dist), so the server answers 404.", ()),
        Step("imagesim exec t1 ls webapps",
             "The image's WorkingDir is /usr/local/tomcat, so relative paths start there.",
             (out_is(""),)),
        Step("imagesim exec t1 sh -c 'rm -r webapps && mv webapps.dist webapps'",
             "rm -r of the image's directory leaves a whiteout. mv of a directory that "
             "comes from a lower layer fails with EXDEV in overlayfs, so mv copies it into "
             "the writable layer and deletes the old name (another whiteout), as real mv "
             "does.", ()),
        Step("imagesim exec t1 ls webapps", "The default apps are in place.",
             (has("ROOT"),)),
        Step("imagesim which t1 /usr/local/tomcat/webapps/ROOT/index.jsp",
             "The apps now come from the container's layer: copies of the files that the "
             "image keeps under webapps.dist.", (has("[+]"),)),
        Step("imagesim diff t1",
             "D for webapps.dist (whiteout), A for the copied files under webapps.",
             (has("D /usr/local/tomcat/webapps.dist"),), max_lines=12),
        Step("imagesim run -d -p 8081:8080 --name mytomcat8 billygoo/tomcat8-jdk8",
             "This image already has its apps in webapps: no fix needed.", ()),
        Step("imagesim exec mytomcat8 ls webapps",
             "Filled from the image's own layer.", (has("ROOT"),)),
        Step("imagesim rm -f t1 mytomcat8", "Clean up.", ()),
    ]


def _redis(ctx: TourContext) -> list[Step]:
    app = os.path.join(ctx.host, "app", "redis")
    conf = os.path.join(app, "redis.conf")

    def write_conf() -> Result:
        os.makedirs(os.path.join(app, "data"), exist_ok=True)
        with open(conf, "w", encoding="utf-8") as f:
            f.write("# redis.conf edited on the host\nappendonly yes\n")
        return Result(0, "", "")

    def edit_conf() -> Result:
        with open(conf, "a", encoding="utf-8") as f:
            f.write("requirepass 123456\n")
        return Result(0, "", "")

    return [
        Step(f"mkdir -p {app} && printf 'appendonly yes\\n' > {conf}",
             "The configuration file lives on the host...", (), action=write_conf),
        Step(f"imagesim run -p 6379:6379 --name myr3 --privileged=true -v {conf}:"
             f"/etc/redis/redis.conf -v {app}/data:/data -d redis:6.0.8 redis-server "
             "/etc/redis/redis.conf",
             "...and is bound over the path redis reads, one file mounted over one file. "
             "The command after the image replaces the image's CMD (it is recorded, not "
             "run: no program runs here).", (), max_lines=6),
        Step("imagesim exec myr3 cat /etc/redis/redis.conf",
             "Inside, the container sees the host's file, not the image's.",
             (has("appendonly yes"),)),
        Step(f"echo 'requirepass 123456' >> {conf}",
             "Edit it on the host...", (), action=edit_conf),
        Step("imagesim exec myr3 cat /etc/redis/redis.conf",
             "...and the change shows inside at once: there is one file, not a copy.",
             (has("requirepass 123456"),)),
        Step("imagesim diff myr3",
             "The only trace in the container's layer is the empty mount point created for "
             "the file (A /etc/redis/redis.conf, as docker shows it); the config's content "
             "and redis's data stay on the host and are never committed.",
             (has("A /etc/redis/redis.conf"), lacks("/data/"))),
        Step("imagesim rm -f myr3", "Clean up.", ()),
    ]


LESSONS: tuple[Lesson, ...] = (
    Lesson("layers", "Image layers, and a base stored once", (), _layers),
    Lesson("union", "The union view: copy-up and whiteouts", ("layers",), _union),
    Lesson("commit", "Commit: install vim, add one layer", ("union",), _commit),
    Lesson("registry", "A private registry: tag, push, catalog, pull", ("commit",),
           _registry),
    Lesson("volumes", "Data volumes: rw, ro, --volumes-from", (), _volumes),
    Lesson("mysql", "mysql: data lost without a volume, kept with one", (), _mysql),
    Lesson("tomcat", "tomcat: the empty webapps fix", ("layers",), _tomcat),
    Lesson("redis", "redis: a config file bound from the host", (), _redis),
)


# --------------------------------------------------------------------------- running

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_imagesim(main: MainFn, root: str, argv: Sequence[str],
                 stdin: str | None = None) -> Result:
    """Run ``imagesim --root ROOT ARGV...`` in-process through ``main`` with captured
    streams (``stdin`` fed to the command)."""
    from click.testing import CliRunner

    runner = CliRunner()
    with runner.isolation(input=stdin or "") as streams:
        status = main(["--root", root, *argv])
        sys.stdout.flush()
        sys.stderr.flush()
        out = streams[0].getvalue().decode("utf-8", "replace")
        err = streams[1].getvalue().decode("utf-8", "replace") if len(streams) > 1 else ""
        # click >= 8.2 also records both streams interleaved, in the order they were written
        mixed = streams[2].getvalue().decode("utf-8", "replace") if len(streams) > 2 else None
    return Result(int(status), out, err, mixed)


def _wait_for_registry(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1):
                return
        except OSError:
            time.sleep(0.1)


def _curl(argv: list[str], port: int) -> Result:
    url = next(a for a in argv if a.startswith("http://"))
    if not url.startswith(f"http://127.0.0.1:{port}/"):
        return Result(2, "", "the tour only talks to its own registry on 127.0.0.1\n")
    _wait_for_registry(port)
    exe = shutil.which("curl")
    if exe is not None:
        proc = subprocess.run([exe, *argv[1:]], capture_output=True, timeout=30, check=False)
        return Result(proc.returncode, proc.stdout.decode(errors="replace"),
                      proc.stderr.decode(errors="replace"))
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return Result(0, resp.read().decode(errors="replace"), "")
    except OSError as e:
        return Result(7, "", f"curl: (7) {e}\n")


class _Printer:
    def __init__(self, out: TextIO, color: bool) -> None:
        self.out = out
        self.console = None
        if color:
            from rich.console import Console

            self.console = Console(file=out, force_terminal=True, highlight=False,
                                   soft_wrap=True)

    def line(self, text: str = "", style: str | None = None) -> None:
        if self.console is not None and style:
            self.console.print(text, style=style, markup=False)
        else:
            self.out.write(text + "\n")
        with contextlib.suppress(Exception):
            self.out.flush()


def _show_output(p: _Printer, r: Result, max_lines: int) -> None:
    lines = (r.mixed if r.mixed is not None else r.out + r.err).rstrip("\n").splitlines()
    shown = lines if len(lines) <= max_lines else lines[:max_lines]
    for line in shown:
        p.line("    " + line)
    if len(lines) > max_lines:
        p.line(f"    ... ({len(lines) - max_lines} more lines)", "dim")


def _run_step(ctx: TourContext, step: Step) -> tuple[Result | None, str | None]:
    """Run one step; returns (result, problem). ``result`` None means skipped."""
    argv = shlex.split(step.command)
    if step.action is not None:
        r = step.action()
    elif argv[0] == "curl":
        r = _curl(argv, ctx.port)
    elif argv[0] == "imagesim":
        if not ctx.has_command(argv[1]):
            return None, f"`imagesim {argv[1]}` is not available in this build"
        r = run_imagesim(ctx.main, ctx.root, argv[1:], step.stdin)
    else:
        return Result(127, "", f"unknown step command {argv[0]}"), "bad step"
    if step.expect_status is None:
        if r.status == 0:
            return r, "the command should have failed, but exited with status 0"
    elif r.status != step.expect_status:
        return r, f"exit status {r.status}, expected {step.expect_status}"
    for check in step.checks:
        problem = check(r)
        if problem:
            return r, problem
    return r, None


def _select(names: Sequence[str] | None) -> list[Lesson]:
    by_name = {lesson.name: lesson for lesson in LESSONS}
    if not names:
        return list(LESSONS)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown lesson {unknown[0]!r}; lessons: "
                         + ", ".join(by_name))
    wanted: set[str] = set()

    def add(n: str) -> None:
        if n in wanted:
            return
        for dep in by_name[n].needs:
            add(dep)
        wanted.add(n)

    for n in names:
        add(n)
    return [lesson for lesson in LESSONS if lesson.name in wanted]


def _cleanup(ctx: TourContext) -> None:
    """Remove every container the tour made (stops the registry server)."""
    with contextlib.suppress(Exception):
        r = run_imagesim(ctx.main, ctx.root, ["ps", "-aq"])
        ids = r.out.split()
        if ids:
            run_imagesim(ctx.main, ctx.root, ["rm", "-f", *ids])


def run_tour(main: MainFn, *, root: str | None = None, lessons: Sequence[str] | None = None,
             pause: bool = False, keep: bool = False, out: TextIO | None = None,
             color: bool = False, input_fn: Callable[[str], str] | None = None,
             has_command: Callable[[str], bool] | None = None) -> int:
    """Run the lessons (all, or ``lessons`` with their prerequisites) through ``main``
    (``imagesim.cli.main``: passed in because library modules never import the CLI) and
    return 0 when every step behaved, 1 when any failed, 2 for an unknown lesson name.
    ``has_command(name)`` says whether a command exists in this build (default: all do);
    steps of missing commands are skipped and listed."""
    out = out if out is not None else sys.stdout
    p = _Printer(out, color)
    try:
        selected = _select(lessons)
    except ValueError as e:
        p.line(f"imagesim tour: {e}")
        return 2
    temp = root is None
    root = root or tempfile.mkdtemp(prefix="imagesim-tour-")
    os.makedirs(root, exist_ok=True)
    host = os.path.join(root, "host")
    os.makedirs(host, exist_ok=True)
    ctx = TourContext(main=main, has_command=has_command or (lambda _name: True),
                      root=os.path.abspath(root), host=host, port=_free_port())
    p.line(f"imagesim tour: {len(selected)} lesson(s), store in {ctx.root}", "bold")
    p.line("Each step shows the command, its real output, and what happened in the layers.")
    try:
        for n, lesson in enumerate(selected, 1):
            p.line()
            p.line(f"━━ {n}/{len(selected)} {lesson.title} ({lesson.name}) ━━", "bold cyan")
            for step in lesson.steps(ctx):
                p.line()
                p.line(f"$ {step.command}", "bold green")
                r, problem = _run_step(ctx, step)
                if r is None:
                    ctx.skipped.append(f"{lesson.name}: {step.command}: {problem}")
                    p.line(f"  SKIPPED: {problem}", "yellow")
                    continue
                _show_output(p, r, step.max_lines)
                for para in textwrap.wrap(step.explain, 88):
                    p.line("  " + para, "italic")
                if problem:
                    ctx.failures.append(f"{lesson.name}: {step.command}: {problem}")
                    p.line(f"  FAILED: {problem}", "bold red")
                else:
                    ctx.passed += 1
                if pause:
                    ask = input_fn or input
                    try:
                        if ask("  -- Enter for the next step, q to quit -- ").strip() == "q":
                            raise KeyboardInterrupt
                    except EOFError:
                        pause = False
    except KeyboardInterrupt:
        p.line("tour interrupted")
        ctx.failures.append("interrupted")
    finally:
        _cleanup(ctx)
        if temp and not keep:
            shutil.rmtree(ctx.root, ignore_errors=True)
    p.line()
    p.line(f"{ctx.passed} steps ok, {len(ctx.failures)} failed, {len(ctx.skipped)} skipped",
           "bold")
    for f in ctx.failures:
        p.line(f"  FAILED  {f}", "red")
    for s in ctx.skipped:
        p.line(f"  SKIPPED {s}", "yellow")
    if keep and temp:
        p.line(f"store kept in {ctx.root}")
    return 1 if ctx.failures else 0


def lesson_names() -> list[str]:
    return [lesson.name for lesson in LESSONS]
