"""Load on our registry: N client processes pushing and pulling for a fixed time.

    python benchmarks/registry_load.py                 # 4 clients, 20 s
    python benchmarks/registry_load.py --clients 8 --seconds 60 --blob-kb 256

The registry runs as its own process (``imagesim registry serve`` on 127.0.0.1, a free
port, a fresh root). Each client is another process with one keep-alive HTTP connection
pool; it loops until the time is up, choosing from a seeded RNG:

* push (60 %): a fresh random layer (monolithic ``POST``+``PUT``, or ``PATCH`` chunks then
  ``PUT`` for half of them), the shared layer every client pushes at once (concurrent pushes
  of the same blob), a config, then the manifest under a new tag;
* pull (40 %): a manifest this client or another pushed earlier, then its config and layers,
  each checked against its digest and size.

Every failed request or mismatch counts as an error. Afterwards every blob file in the
registry's storage is re-hashed (corrupt = not hashing to its name), and every manifest a
client pushed is fetched once more with all its blobs (lost = missing). Prints a table and a
JSON line: operations, errors, corrupt and lost blobs, throughput (operations and MB per
second), p50/p99/max latency per operation kind. Exits 1 on any error, corruption or loss.
Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _location(resp, base: str) -> str:
    loc = resp.headers["location"]
    return loc if loc.startswith("http") else base + loc


def _push_blob(c, base: str, repo: str, data: bytes, chunked: bool) -> None:
    d = _digest(data)
    if c.head(f"{base}/v2/{repo}/blobs/{d}").status_code == 200:
        return
    r = c.post(f"{base}/v2/{repo}/blobs/uploads/")
    if r.status_code != 202:
        raise RuntimeError(f"POST upload: {r.status_code} {r.text[:200]}")
    url = _location(r, base)
    if chunked:
        step = max(1, len(data) // 3)
        for start in range(0, len(data), step):
            part = data[start:start + step]
            r = c.patch(url, content=part, headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{start}-{start + len(part) - 1}"})
            if r.status_code != 202:
                raise RuntimeError(f"PATCH: {r.status_code} {r.text[:200]}")
            url = _location(r, base)
        r = c.put(url, params={"digest": d})
    else:
        r = c.put(url, params={"digest": d}, content=data,
                  headers={"Content-Type": "application/octet-stream"})
    if r.status_code != 201:
        raise RuntimeError(f"PUT blob: {r.status_code} {r.text[:200]}")


def _client(idx: int, base: str, seconds: float, blob_kb: int, seed: int, shared: bytes,
            out: multiprocessing.Queue, registry_of_pushes: list) -> None:
    import httpx

    rng = random.Random(seed * 1000 + idx)
    lat: dict[str, list[float]] = {"push": [], "pull": []}
    errors: list[str] = []
    pushed: list[tuple[str, str]] = []
    bytes_moved = 0
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=60) as c:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            t0 = time.monotonic()
            kind = "push" if (not pushed or rng.random() < 0.6) else "pull"
            try:
                if kind == "push":
                    repo, tag = f"load/c{idx}", f"t{n}"
                    layer = rng.randbytes(rng.randint(blob_kb * 256, blob_kb * 1024))
                    _push_blob(c, base, repo, layer, chunked=rng.random() < 0.5)
                    _push_blob(c, base, repo, shared, chunked=False)
                    cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
                        "type": "layers",
                        "diff_ids": [_digest(layer), _digest(shared)]}}).encode()
                    _push_blob(c, base, repo, cfg, chunked=False)
                    manifest = json.dumps({
                        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
                        "config": {"mediaType": CONFIG_TYPE, "digest": _digest(cfg),
                                   "size": len(cfg)},
                        "layers": [{"mediaType": LAYER_TYPE, "digest": _digest(x),
                                    "size": len(x)} for x in (layer, shared)]}).encode()
                    r = c.put(f"{base}/v2/{repo}/manifests/{tag}", content=manifest,
                              headers={"Content-Type": OCI_MANIFEST})
                    if r.status_code != 201:
                        raise RuntimeError(f"PUT manifest: {r.status_code} {r.text[:200]}")
                    pushed.append((repo, tag))
                    registry_of_pushes.append((repo, tag))
                    bytes_moved += len(layer) + len(cfg) + len(manifest)
                else:
                    pool = list(registry_of_pushes) or pushed
                    repo, tag = rng.choice(pool)
                    bytes_moved += _pull(c, base, repo, tag)
            except Exception as e:  # every failure is an error of the run
                errors.append(f"{kind}: {type(e).__name__}: {e}"[:300])
            lat[kind].append(time.monotonic() - t0)
    out.put({"idx": idx, "lat": lat, "errors": errors, "pushed": pushed,
             "bytes": bytes_moved})


def _pull(c, base: str, repo: str, tag: str) -> int:
    r = c.get(f"{base}/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    if r.status_code != 200:
        raise RuntimeError(f"GET manifest {repo}:{tag}: {r.status_code}")
    m = r.json()
    moved = len(r.content)
    for desc in [m["config"], *m["layers"]]:
        b = c.get(f"{base}/v2/{repo}/blobs/{desc['digest']}", follow_redirects=True)
        if b.status_code != 200:
            raise RuntimeError(f"GET blob {desc['digest']}: {b.status_code}")
        if _digest(b.content) != desc["digest"] or len(b.content) != desc["size"]:
            raise RuntimeError(f"blob {desc['digest']} came back corrupt")
        moved += len(b.content)
    return moved


def _pct(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def _corrupt_blobs(root: str) -> list[str]:
    bad = []
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) != "sha256" or "blobs" not in dirpath:
            continue
        for name in files:
            if re.fullmatch(r"[a-f0-9]{64}", name):
                h = hashlib.sha256()
                with open(os.path.join(dirpath, name), "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                if h.hexdigest() != name:
                    bad.append(name)
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--blob-kb", type=int, default=128, help="layer size: KB/4 .. KB")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the registry root")
    args = ap.parse_args(argv)

    import httpx

    root = tempfile.mkdtemp(prefix="registry-load-")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGESIM_")}
    env["PYTHONPATH"] = REPO
    server = subprocess.Popen([sys.executable, "-m", "imagesim", "registry", "serve",
                               "--addr", f"127.0.0.1:{port}", "--root",
                               os.path.join(root, "reg"), "-q"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/v2/", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("registry did not start")
            time.sleep(0.05)
        shared = random.Random(args.seed).randbytes(args.blob_kb * 512)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Manager() as mgr:
            pushes = mgr.list()
            q: multiprocessing.Queue = ctx.Queue()
            procs = [ctx.Process(target=_client, args=(i, base, args.seconds, args.blob_kb,
                                                       args.seed, shared, q, pushes))
                     for i in range(args.clients)]
            t0 = time.monotonic()
            for p in procs:
                p.start()
            results = [q.get(timeout=args.seconds + 120) for _ in procs]
            wall = time.monotonic() - t0
            for p in procs:
                p.join(timeout=30)
        # afterwards: every blob intact, every pushed manifest complete
        corrupt = _corrupt_blobs(os.path.join(root, "reg"))
        lost = []
        with httpx.Client(timeout=60) as c:
            for r in results:
                for repo, tag in r["pushed"]:
                    try:
                        _pull(c, base, repo, tag)
                    except Exception as e:
                        lost.append(f"{repo}:{tag}: {e}")
        server_alive = server.poll() is None
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    lat = {k: [x for r in results for x in r["lat"][k]] for k in ("push", "pull")}
    errors = [e for r in results for e in r["errors"]]
    ops = sum(len(v) for v in lat.values())
    mb = sum(r["bytes"] for r in results) / 1e6
    summary = {
        "clients": args.clients, "seconds": round(wall, 1), "operations": ops,
        "pushes": len(lat["push"]), "pulls": len(lat["pull"]), "errors": len(errors),
        "corrupt_blobs": len(corrupt), "lost_manifests": len(lost),
        "server_alive": server_alive,
        "ops_per_s": round(ops / wall, 1), "mb_per_s": round(mb / wall, 2),
        "latency_ms": {k: {"p50": round(_pct(v, 50) * 1000, 1),
                           "p99": round(_pct(v, 99) * 1000, 1),
                           "max": round(max(v, default=0) * 1000, 1),
                           "mean": round(statistics.fmean(v) * 1000, 1) if v else 0}
                       for k, v in lat.items()},
    }
    print(f"{'op':<6}{'count':>8}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    for k in ("push", "pull"):
        s = summary["latency_ms"][k]
        print(f"{k:<6}{len(lat[k]):>8}{s['p50']:>10}{s['p99']:>10}{s['max']:>10}")
    print(f"{args.clients} clients, {wall:.1f} s: {ops} operations ({summary['ops_per_s']}/s, "
          f"{summary['mb_per_s']} MB/s); errors {len(errors)}, corrupt blobs {len(corrupt)}, "
          f"lost manifests {len(lost)}")
    for e in (errors + lost)[:10]:
        print("  ", e)
    print(json.dumps(summary))
    return 0 if not errors and not corrupt and not lost and server_alive else 1


if __name__ == "__main__":
    sys.exit(main())
