"""Several ``imagesim`` processes at once on one store root: commit, pull, tag, rmi, gc
(image prune), container create/rm. Afterwards no tag is lost, the state parses, fsck
finds nothing broken, and every image still has every blob and layer it uses."""

from __future__ import annotations

import multiprocessing
import os
import random
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hardening_kit as kit

from imagesim.container import ContainerStore
from imagesim.registry.server import ServerThread
from imagesim.store import Store


def _only_garbage(problems: list[str]) -> list[str]:
    return [p for p in problems if "(garbage)" not in p]


def test_cli_processes_at_once(tmp_path):
    root = str(tmp_path / "root")
    tars = {}
    for name in ("base", "junk", "p0", "p1"):
        tars[name] = str(tmp_path / f"{name}.tar")
        with open(tars[name], "wb") as f:
            f.write(kit.tar_bytes(kit.sample_files(name, n=4, size=30_000)))
    kit.cli(root, "import", tars["base"], "base:1")
    errors: list[str] = []
    with ServerThread(tmp_path / "reg", fsync=False) as srv:
        src = str(tmp_path / "src")
        for p in ("p0", "p1"):
            kit.cli(src, "import", tars[p], f"{srv.host}/conc/{p}:1")
            kit.cli(src, "push", f"{srv.host}/conc/{p}:1")
        added = tmp_path / "added.txt"
        added.write_text("new file\n")

        def worker(name: str, steps: list[tuple[str, ...]]) -> None:
            for args in steps:
                r = kit.cli(root, *args, check=False)
                if r.returncode != 0:
                    errors.append(f"{name}: imagesim {' '.join(args)}: {r.stderr.strip()}")

        plans = {
            "tagger": [("tag", "base:1", f"tagger:{i}") for i in range(5)],
            "committer": [step for i in range(2) for step in (
                ("create", "--name", f"cc{i}", "base:1"),
                ("cp", str(added), f"cc{i}:/added-{i}.txt"),
                ("commit", f"cc{i}", f"commit:{i}"))],
            "puller": [("pull", f"{srv.host}/conc/p{i}:1") for i in range(2)],
            "gc": [step for i in range(2) for step in (
                ("import", tars["junk"], f"junk:{i}"), ("rmi", f"junk:{i}"),
                ("image", "prune", "-f"))],
            "containers": [step for i in range(2) for step in (
                ("create", "--name", f"z{i}", "base:1"), ("rm", f"z{i}"))],
        }
        threads = [threading.Thread(target=worker, args=(n, s)) for n, s in plans.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
        assert not [t for t in threads if t.is_alive()]
    assert errors == []
    store = Store(root, fsync=False)
    tags = set(store.tags())
    want = {f"docker.io/library/tagger:{i}" for i in range(5)} | \
        {f"docker.io/library/commit:{i}" for i in range(2)} | \
        {f"{srv.host}/conc/p{i}:1" for i in range(2)} | {"docker.io/library/base:1"}
    assert want <= tags, want - tags
    assert not {t for t in tags if "junk" in t}
    names = {c.name for c in ContainerStore(store).list(all=True)}
    assert names == {"cc0", "cc1"}
    assert _only_garbage(store.fsck(deep=True).problems) == []
    # every committed image has its new file: nothing it uses was collected
    for i in range(2):
        img = store.resolve(f"commit:{i}")
        top = store.layer_dir(img.diff_ids[-1])
        with open(os.path.join(top, f"added-{i}.txt")) as f:
            assert f.read() == "new file\n"


def _hammer(root: str, who: int, rounds: int, seed: int) -> None:
    """One process: tag, untag, pin, gc and record images through the Store API."""
    rnd = random.Random(seed * 100 + who)
    store = Store(root, fsync=False)
    for i in range(rounds):
        store.tag("base:1", f"w{who}:{i}")
        op = rnd.randrange(4)
        if op == 0:
            store.gc()
        elif op == 1:
            store.tag("base:1", f"tmp{who}:{i}")
            store.untag(f"tmp{who}:{i}")
        elif op == 2:
            store.pin(f"holder-{who}", "base:1")
            store.unpin(f"holder-{who}")
        else:
            store.prune()


def test_store_api_from_many_processes(tmp_path):
    """Four processes, 40 state changes each, interleaved with gc and prune: every tag each
    one made is there afterwards (no lost update), the state parses, fsck is clean."""
    root = str(tmp_path / "root")
    src = tmp_path / "base.tar"
    src.write_bytes(kit.tar_bytes(kit.sample_files("base", n=3, size=10_000)))
    kit.cli(root, "import", str(src), "base:1")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(root, w, 40, 3)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    store = Store(root, fsync=False)
    tags = set(store.tags())
    want = {f"docker.io/library/w{w}:{i}" for w in range(4) for i in range(40)}
    assert want <= tags
    assert not {t for t in tags if "/tmp" in t}
    assert store.pins() == {}
    assert store.fsck(deep=True).problems == []
