"""Crash campaigns: SIGKILL a real ``imagesim`` process mid-operation, then judge the store.

Each scenario is one CLI command (commit, load, save, pull, push, rmi/prune with gc,
container create/rm) run as a subprocess on a copy of a prepared store. A traced run first
records every crash point the command passes (``imagesim.faults``); a seeded choice of those
(point, n) pairs is then tried, each in a fresh copy, with ``IMAGESIM_KILL_AT`` making the
process ``SIGKILL`` itself exactly there. Timing kills (``SIGKILL`` from outside after a
seeded delay) cover the places between the named points. After every kill:

* ``fsck --deep`` may report only pieces nobody can see (temporaries, garbage, stale leases),
  never a corrupt blob or a broken image, tag, layer or container record;
* after ``fsck --repair`` a second fsck is clean;
* the operation is either fully visible or not at all (checked per scenario);
* a retry succeeds and leaves a clean store.

The registry side (a registry server killed while receiving an upload) is
``upload_trial``. ``python tests/hardening/crash_matrix.py --kills N --seed S`` runs a long
campaign and prints a table and JSON; the test suite runs a short one.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hardening_kit as kit
import httpx

from imagesim.cli import main as cli_main
from imagesim.errors import ImageNotFound
from imagesim.registry.server import ServerThread
from imagesim.store import Store


def run_main(root: str, *args: str) -> int:
    """Run one CLI command in this process (fast retries); stdout/stderr swallowed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main(["--root", root, *args])
    if rc != 0:
        raise AssertionError(f"imagesim {' '.join(args)} -> {rc}: {err.getvalue()}")
    return rc


class Partial(AssertionError):
    """An operation is half visible after a crash."""


@dataclass
class World:
    """Everything the scenarios start from: a template store, an archive to load, a registry
    (in this process) holding an image to pull."""

    base: str
    template: str
    archive: str
    server: ServerThread

    @property
    def host(self) -> str:
        return self.server.host

    @classmethod
    def build(cls, base: str) -> World:
        os.makedirs(base, exist_ok=True)
        server = ServerThread(os.path.join(base, "registry"), fsync=False).start()
        t = os.path.join(base, "template")
        tars = {}
        for name in ("base", "other", "third"):
            tars[name] = os.path.join(base, f"{name}.tar")
            with open(tars[name], "wb") as f:
                f.write(kit.tar_bytes(kit.sample_files(name)))
        run_main(t, "import", tars["base"], "base:1")
        run_main(t, "import", tars["other"], "other:1")
        run_main(t, "create", "--name", "c1", "base:1")
        added = os.path.join(base, "added")
        for rel, data in kit.sample_files("added", n=6, size=20_000).items():
            p = os.path.join(added, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
        run_main(t, "cp", added + "/.", "c1:/added")
        # the image to pull lives only in the registry (pushed from a scratch store)
        scratch = os.path.join(base, "scratch")
        run_main(scratch, "import", tars["third"], f"{server.host}/crash/third:1")
        run_main(scratch, "push", f"{server.host}/crash/third:1")
        run_main(scratch, "tag", f"{server.host}/crash/third:1", "third:1")
        archive = os.path.join(base, "third-archive.tar")
        run_main(scratch, "save", "-o", archive, "third:1")
        kit.rm(scratch)
        return cls(base, t, archive, server)

    def close(self) -> None:
        self.server.stop()


@dataclass
class Scenario:
    name: str
    argv: Callable[[World, str], list[str]]
    outcome: Callable[[World, str], str]        # "done" | "absent"; raises Partial
    fresh_root: bool = False                    # start from an empty store, not the template
    prepare: Callable[[World, str], None] | None = None


def _tag_state(root: str, tag: str) -> str:
    try:
        Store(root, fsync=False).resolve(tag)
    except ImageNotFound:
        return "absent"
    return "done"  # fsck (run before) proved the image whole


def _container_state(root: str, name: str) -> str:
    from imagesim.container import ContainerStore

    names = {c.name for c in ContainerStore(Store(root, fsync=False)).list(all=True)}
    return "done" if name in names else "absent"


def _save_outcome(world: World, trial: str) -> str:
    out = os.path.join(trial, "out.tar")
    if not os.path.exists(out):
        return "absent"
    check = os.path.join(trial, "check-load")
    try:
        run_main(check, "load", "-i", out)
    except AssertionError as e:
        raise Partial(f"save left a partial archive: {e}") from None
    finally:
        kit.rm(check)
    return "done"


def _push_ref(world: World, trial: str) -> str:
    with open(os.path.join(trial, "push-host")) as f:
        return f"{f.read().strip()}/crash/pushed:1"


def _push_prepare(world: World, trial: str) -> None:
    # a registry of its own per trial, so every trial really uploads
    srv = ServerThread(os.path.join(trial, "reg"), fsync=False).start()
    _servers[trial] = srv
    with open(os.path.join(trial, "push-host"), "w") as f:
        f.write(srv.host)
    Store(os.path.join(trial, "root"), fsync=False).tag("other:1", _push_ref(world, trial))


def _push_outcome(world: World, trial: str) -> str:
    bad = kit.registry_blobs_ok(os.path.join(trial, "reg"))
    if bad:
        raise Partial(f"registry holds corrupt blobs: {bad}")
    host = _servers[trial].host
    r = httpx.get(f"http://{host}/v2/crash/pushed/manifests/1",
                  headers={"Accept": "application/vnd.oci.image.manifest.v1+json,"
                           "application/vnd.docker.distribution.manifest.v2+json"})
    if r.status_code == 404:
        return "absent"
    r.raise_for_status()
    m = r.json()
    for d in [m["config"], *m["layers"]]:
        b = httpx.get(f"http://{host}/v2/crash/pushed/blobs/{d['digest']}",
                      follow_redirects=True)
        if b.status_code != 200:
            raise Partial(f"manifest visible but blob {d['digest']} is {b.status_code}")
    return "done"


_servers: dict[str, ServerThread] = {}


def _gone_state(root: str, tag: str) -> str:
    return "done" if _tag_state(root, tag) == "absent" else "absent"


SCENARIOS: dict[str, Scenario] = {s.name: s for s in [
    Scenario("commit", lambda w, t: ["commit", "c1", "base:9"],
             lambda w, t: _tag_state(os.path.join(t, "root"), "base:9")),
    Scenario("load", lambda w, t: ["load", "-i", w.archive],
             lambda w, t: _tag_state(os.path.join(t, "root"), "third:1")),
    Scenario("save", lambda w, t: ["save", "-o", os.path.join(t, "out.tar"), "base:1",
                                   "other:1"], _save_outcome),
    Scenario("pull", lambda w, t: ["pull", f"{w.host}/crash/third:1"],
             lambda w, t: _tag_state(os.path.join(t, "root"), f"{w.host}/crash/third:1"),
             fresh_root=True),
    Scenario("push", lambda w, t: ["push", _push_ref(w, t)], _push_outcome,
             prepare=_push_prepare),
    Scenario("rmi-gc", lambda w, t: ["rmi", "other:1"],
             lambda w, t: _gone_state(os.path.join(t, "root"), "other:1")),
    Scenario("prune-gc", lambda w, t: ["image", "prune", "-a", "-f"],
             lambda w, t: _gone_state(os.path.join(t, "root"), "other:1")),
    Scenario("create", lambda w, t: ["create", "--name", "c2", "base:1"],
             lambda w, t: _container_state(os.path.join(t, "root"), "c2")),
    Scenario("rm", lambda w, t: ["rm", "c1"],
             lambda w, t: "absent" if _container_state(os.path.join(t, "root"), "c1")
             == "done" else "done"),
]}


@dataclass
class TrialResult:
    scenario: str
    kill: str
    killed: bool
    state_after_kill: str
    fsck_before: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _new_trial(world: World, scenario: Scenario) -> str:
    trial = tempfile.mkdtemp(prefix=f"{scenario.name}-", dir=world.base)
    root = os.path.join(trial, "root")
    if scenario.fresh_root:
        os.makedirs(root)
    else:
        kit.copy_tree(world.template, root)
    if scenario.prepare:
        scenario.prepare(world, trial)
    return trial


def _finish(trial: str) -> None:
    srv = _servers.pop(trial, None)
    if srv is not None:
        srv.stop()
    kit.rm(trial)


def trace(world: World, scenario: Scenario) -> tuple[list[str], float]:
    """Run the scenario once without a kill: the crash points it passes and how long it
    took (the window for timing kills)."""
    trial = _new_trial(world, scenario)
    try:
        tfile = os.path.join(trial, "trace")
        t0 = time.monotonic()
        kit.cli(os.path.join(trial, "root"), *scenario.argv(world, trial),
                IMAGESIM_FAULT_TRACE=tfile)
        took = time.monotonic() - t0
        assert scenario.outcome(world, trial) == "done"
        return kit.points_hit(tfile), took
    finally:
        _finish(trial)


def trial(world: World, scenario: Scenario, kill: tuple[str, int] | float) -> TrialResult:
    """One crash: run the scenario, kill it at ``kill`` ((point, n) or a delay in seconds),
    judge the store, check all-or-nothing, retry. Raises AssertionError on any failure."""
    t0 = time.monotonic()
    path = _new_trial(world, scenario)
    root = os.path.join(path, "root")
    try:
        argv = [*kit.CLI, *scenario.argv(world, path)]
        if isinstance(kill, tuple):
            label = f"{kill[0]}:{kill[1]}"
            env = kit.env_for(root, IMAGESIM_KILL_AT=label)
            r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60,
                               cwd=kit.REPO)
            rc = r.returncode
        else:
            label = f"after {kill * 1000:.0f} ms"
            p = subprocess.Popen(argv, env=kit.env_for(root), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, cwd=kit.REPO)
            try:
                p.wait(timeout=kill)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGKILL)
            rc = p.wait(timeout=60)
        killed = rc == -signal.SIGKILL
        if not killed and rc != 0:
            raise AssertionError(f"{scenario.name} [{label}] failed without a kill: rc={rc}")
        verdict = kit.judge(root)
        assert not verdict.bad, f"{scenario.name} [{label}]: fsck found {verdict.bad}"
        assert not verdict.after_repair, \
            f"{scenario.name} [{label}]: still broken after --repair: {verdict.after_repair}"
        state = scenario.outcome(world, path)
        if not killed:
            assert state == "done", f"{scenario.name} [{label}] exited 0 but is {state}"
        if state == "absent":
            run_main(root, *scenario.argv(world, path))  # the retry
            state2 = scenario.outcome(world, path)
            assert state2 == "done", f"{scenario.name} [{label}]: retry left it {state2}"
            after = Store(root, fsync=False).fsck(deep=True).problems
            assert not after, f"{scenario.name} [{label}]: after the retry fsck: {after}"
        return TrialResult(scenario.name, label, killed, state, verdict.before,
                           time.monotonic() - t0)
    finally:
        _finish(path)


def upload_trial(base: str, kill: tuple[str, int] | float) -> TrialResult:
    """Kill a registry *server* process (``imagesim registry serve``) while it receives a
    push; its storage must hold no corrupt blob, no manifest whose blobs are missing; after a
    restart the same push succeeds and pulls back intact."""
    t0 = time.monotonic()
    path = tempfile.mkdtemp(prefix="upload-", dir=base)
    try:
        src = os.path.join(path, "src")
        # incompressible, so the pushed layer is several chunks long
        rnd = random.Random(7)
        data = kit.tar_bytes({f"u/f{i}": rnd.randbytes(200_000) for i in range(3)})
        with open(os.path.join(path, "u.tar"), "wb") as f:
            f.write(data)
        run_main(src, "import", os.path.join(path, "u.tar"), "up:1")
        reg = os.path.join(path, "reg")
        port = kit.free_port()
        host = f"127.0.0.1:{port}"
        run_main(src, "tag", "up:1", f"{host}/crash/up:1")

        def serve(**extra: str) -> subprocess.Popen:
            p = subprocess.Popen([*kit.CLI, "registry", "serve", "--addr", host, "--root", reg,
                                  "-q"], env=kit.env_for(src, **extra),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://{host}/v2/", timeout=1).status_code in (200, 401):
                        return p
                time.sleep(0.05)
            p.kill()
            raise AssertionError("registry server did not start")

        extra = {"IMAGESIM_KILL_AT": f"{kill[0]}:{kill[1]}"} if isinstance(kill, tuple) else {}
        label = f"{kill[0]}:{kill[1]}" if isinstance(kill, tuple) else f"after {kill*1000:.0f} ms"
        server = serve(**extra)
        try:
            push = subprocess.Popen([*kit.CLI, "push", "--chunk-size", "65536",
                                     f"{host}/crash/up:1"], env=kit.env_for(src),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if not isinstance(kill, tuple):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    server.wait(timeout=kill)
                server.send_signal(signal.SIGKILL)
            push.wait(timeout=60)
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=5)
            killed = server.poll() == -signal.SIGKILL
        finally:
            if server.poll() is None:
                server.send_signal(signal.SIGKILL)
                server.wait()
        bad = kit.registry_blobs_ok(reg)
        assert not bad, f"upload [{label}]: corrupt registry blobs {bad}"
        server = serve()
        try:
            run_main(src, "push", f"{host}/crash/up:1")
            dst = os.path.join(path, "dst")
            run_main(dst, "pull", f"{host}/crash/up:1")
            problems = Store(dst, fsync=False).fsck(deep=True).problems
            assert not problems, f"upload [{label}]: pulled store: {problems}"
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        assert not kit.registry_blobs_ok(reg)
        return TrialResult("registry-upload", label, killed, "n/a", [],
                           time.monotonic() - t0)
    finally:
        kit.rm(path)


def plan(world: World, names: list[str], kills_each: int, timing_each: int,
         seed: int) -> list[tuple[Scenario, tuple[str, int] | float]]:
    """The seeded list of (scenario, kill) to try: ``kills_each`` distinct crash points per
    scenario (all of them when it passes fewer) and ``timing_each`` timing kills."""
    rng = random.Random(seed)
    out: list[tuple[Scenario, tuple[str, int] | float]] = []
    for name in names:
        sc = SCENARIOS[name]
        points, took = trace(world, sc)
        choices = kit.kill_choices(points)
        assert choices, f"{name} passes no crash point"
        # always the first and last point, then a seeded sample of the rest
        picked = {choices[0], choices[-1]}
        rest = [c for c in choices if c not in picked]
        picked.update(rng.sample(rest, min(len(rest), max(0, kills_each - 2))))
        out.extend((sc, c) for c in sorted(picked, key=choices.index))
        out.extend((sc, rng.uniform(0.25, max(0.3, took))) for _ in range(timing_each))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20, help="crash points per scenario")
    ap.add_argument("--timing", type=int, default=4, help="timing kills per scenario")
    ap.add_argument("--uploads", type=int, default=6, help="registry-server kills")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--only", nargs="*", default=list(SCENARIOS))
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    base = tempfile.mkdtemp(prefix="crash-matrix-")
    world = World.build(base)
    results: list[TrialResult] = []
    failures: list[str] = []
    try:
        for sc, kill in plan(world, args.only, args.kills, args.timing, args.seed):
            try:
                results.append(trial(world, sc, kill))
            except AssertionError as e:
                failures.append(str(e))
                print("FAIL", e, file=sys.stderr)
        rng = random.Random(args.seed + 1)
        for i in range(args.uploads):
            kill: tuple[str, int] | float
            kill = (("upload.chunk", rng.randint(1, 12)) if i % 3 == 0 else
                    ("upload.commit", rng.randint(1, 3)) if i % 3 == 1 else
                    rng.uniform(0.6, 1.6))
            try:
                results.append(upload_trial(base, kill))
            except AssertionError as e:
                failures.append(str(e))
                print("FAIL", e, file=sys.stderr)
    finally:
        world.close()
        kit.rm(base)
    by: dict[str, list[TrialResult]] = {}
    for r in results:
        by.setdefault(r.scenario, []).append(r)
    print(f"{'scenario':<16}{'trials':>7}{'killed':>8}{'absent':>8}{'done':>6}")
    for name, rs in by.items():
        print(f"{name:<16}{len(rs):>7}{sum(r.killed for r in rs):>8}"
              f"{sum(r.state_after_kill == 'absent' for r in rs):>8}"
              f"{sum(r.state_after_kill == 'done' for r in rs):>6}")
    summary = {"seed": args.seed, "trials": len(results) + len(failures),
               "killed": sum(r.killed for r in results), "failures": failures,
               "by_scenario": {k: len(v) for k, v in by.items()}}
    print(json.dumps(summary))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**summary, "results": [r.__dict__ for r in results]}, f, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
