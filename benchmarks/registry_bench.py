"""Registry throughput: push and pull of one image with N MiB of layers (default 1024) between
our client and our server, and the same image with skopeo against the reference registry
(``docker-registry``), in one run, next to the floor (sha256 + disk copy of the same bytes).

Every party runs as its own process on 127.0.0.1, so each one's peak RSS is measured
(``wait4`` rusage). Prints a table and a JSON document.

    .venv/bin/python benchmarks/registry_bench.py            # 1 GiB of layers
    .venv/bin/python benchmarks/registry_bench.py --quick    # 128 MiB
    .venv/bin/python benchmarks/registry_bench.py --size-mib 256 --layers 2 --json out.json
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
CHUNK = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    import httpx
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server for {url} did not start") from None
            time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds a live process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


LAST_CPU = [0.0]


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Run a command to completion; (seconds, peak RSS in KiB); its CPU seconds go to
    ``LAST_CPU[0]``. Dirty pages left by the previous step are flushed first, so no step
    pays for another's writeback."""
    os.sync()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    LAST_CPU[0] = usage.ru_utime + usage.ru_stime
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed ({proc.returncode}): {err[-2000:]}")
    return elapsed, usage.ru_maxrss


def stop_measured(proc: subprocess.Popen) -> int:
    """Read a server's peak RSS (VmHWM, KiB), then SIGTERM it and wait."""
    with open(f"/proc/{proc.pid}/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    proc.terminate()
    proc.wait()
    return hwm


def make_layer(path: str, size: int, seed: int) -> None:
    """An uncompressed layer tar holding one file of ``size`` pseudo-random bytes."""
    import random
    rng = random.Random(seed)
    with open(path, "wb") as out, tarfile.open(fileobj=out, mode="w") as t:
        info = tarfile.TarInfo(f"data/blob{seed}.bin")
        info.size, info.mtime, info.mode = size, 0, 0o644

        class Gen(io.RawIOBase):
            left = size

            def readable(self) -> bool:
                return True

            def readinto(self, b) -> int:  # type: ignore[override]
                n = min(len(b), self.left, CHUNK)
                if n <= 0:
                    return 0
                b[:n] = rng.randbytes(n)
                self.left -= n
                return n

        t.addfile(info, io.BufferedReader(Gen(), CHUNK))


def build_image(store_root: str, work: str, total_mib: int, layers: int, tag: str):
    from imagesim import oci
    from imagesim.digest import Digest
    from imagesim.store import Store
    store = Store(store_root, fsync=False)
    descs, diffs = [], []
    per = total_mib * (1 << 20) // layers
    for i in range(layers):
        path = os.path.join(work, f"layer{i}.tar")
        make_layer(path, per - 1024, i)
        with open(path, "rb") as f:
            d, n = Digest.of_stream(f)
        with open(path, "rb") as f:
            store.blobs.put_stream(f, d, n)
        os.unlink(path)
        descs.append(oci.Descriptor(oci.OCI_LAYER, d, n))
        diffs.append(str(d))
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": diffs}}).encode()
    cd = store.blobs.put(cfg)
    manifest = oci.build_manifest(oci.Descriptor(oci.OCI_CONFIG, cd, len(cfg)), descs)
    return store, store.add_image(manifest, tags=[tag])


def write_dir_layout(store, image, dest: str) -> None:
    """skopeo's ``dir:`` transport: manifest.json, version, and blobs named by hex (hard
    links to the store's files: no extra copy)."""
    os.makedirs(dest, exist_ok=True)
    with open(os.path.join(dest, "manifest.json"), "wb") as f:
        f.write(image.manifest_bytes)
    with open(os.path.join(dest, "version"), "w") as f:
        f.write("Directory Transport Version: 1.1\n")
    for d in [image.config_descriptor.digest, *(x.digest for x in image.layers)]:
        os.link(store.blobs.path(d), os.path.join(dest, d.hex))


def floor(paths: list[str], work: str) -> float:
    """sha256 + copy to disk (with fsync, as a verifying store does) of the same bytes."""
    os.sync()
    t0 = time.perf_counter()
    c0 = time.process_time()
    for i, p in enumerate(paths):
        h = hashlib.sha256()
        out = os.path.join(work, f"floor{i}")
        with open(p, "rb") as src, open(out, "wb") as dst:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        os.unlink(out)
    LAST_CPU[0] = time.process_time() - c0
    return time.perf_counter() - t0


def client_pull_blobs(host: str, repo: str, tag: str, dest: str) -> None:
    """Transfer-only pull with our client (manifest, then every blob streamed through the
    verifying blob writer), for a like-for-like comparison with ``skopeo copy ... dir:``."""
    from imagesim import oci
    from imagesim.blobs import FileBlobStore
    from imagesim.config import ClientConfig
    from imagesim.registry.client import RegistrySession, download_blobs
    blobs = FileBlobStore(dest)
    with RegistrySession(host, ClientConfig(os.path.join(dest, "cfg.json"), {})) as s:
        data, _, _ = s.get_manifest(repo, tag)
        m = oci.parse_manifest(data)
        for _ in download_blobs(s, repo, [m.config, *m.layers], blobs):
            pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="128 MiB instead of 1 GiB")
    ap.add_argument("--json", default=None, help="also write the JSON here")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--_pull-blobs", nargs=4, dest="pull_blobs", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.pull_blobs:
        client_pull_blobs(*args.pull_blobs)
        return 0
    size = 128 if args.quick else args.size_mib
    work = tempfile.mkdtemp(prefix="regbench-", dir=args.workdir)
    py = sys.executable
    env = dict(os.environ, PYTHONPATH=ROOT, IMAGESIM_CONFIG=os.path.join(work, "cfg.json"))
    results: dict[str, dict] = {}
    procs: list[subprocess.Popen] = []
    try:
        src_root = os.path.join(work, "src")
        our_port, ref_port = free_port(), free_port()
        our_host, ref_host = f"127.0.0.1:{our_port}", f"127.0.0.1:{ref_port}"
        print(f"building a {size} MiB image ({args.layers} layers) ...", file=sys.stderr)
        store, image = build_image(src_root, work, size, args.layers, f"{our_host}/bench:1")
        store.tag(image, f"{ref_host}/bench:1")
        nbytes = sum(d.size for d in image.layers) + image.config_descriptor.size
        paths = [store.blobs.path(d.digest) for d in image.layers]
        results["floor"] = {"seconds": floor(paths, work), "client_cpu_s": LAST_CPU[0]}

        # ours: server process + client processes
        server = subprocess.Popen([py, "-m", "imagesim", "registry", "serve", "-q", "--addr",
                                   our_host, "--root", os.path.join(work, "ours")],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(server)
        wait_http(f"http://{our_host}/v2/", server)
        def ours(name: str, cmd: list[str]) -> None:
            s0 = cpu_seconds(server.pid)
            t, rss = run_measured(cmd, env)
            results[name] = {"seconds": t, "client_rss_kib": rss, "client_cpu_s": LAST_CPU[0],
                             "server_cpu_s": cpu_seconds(server.pid) - s0}

        ours("ours push", [py, "-m", "imagesim", "--root", src_root, "push",
                           f"{our_host}/bench:1"])
        ours("ours pull", [py, __file__, "--_pull-blobs", our_host, "bench", "1",
                           os.path.join(work, "pull-blobs")])
        ours("ours pull+unpack (imagesim pull)", [py, "-m", "imagesim", "--root",
                                                  os.path.join(work, "dst"), "pull",
                                                  f"{our_host}/bench:1"])
        server_rss = stop_measured(server)
        procs.remove(server)
        for k in ("ours push", "ours pull", "ours pull+unpack (imagesim pull)"):
            results[k]["server_rss_kib"] = server_rss
        shutil.rmtree(os.path.join(work, "dst"), ignore_errors=True)
        shutil.rmtree(os.path.join(work, "pull-blobs"), ignore_errors=True)

        # skopeo + docker-registry
        if shutil.which("skopeo") and os.path.exists("/usr/bin/docker-registry"):
            conf = os.path.join(work, "registry.yml")
            with open(conf, "w") as f:
                f.write(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                        f"    rootdirectory: {os.path.join(work, 'ref')}\n"
                        f"http:\n  addr: {ref_host}\n")
            ref = subprocess.Popen(["/usr/bin/docker-registry", "serve", conf],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(ref)
            wait_http(f"http://{ref_host}/v2/", ref)
            layout = os.path.join(work, "dir-src")
            write_dir_layout(store, image, layout)
            def theirs(name: str, cmd: list[str]) -> None:
                s0 = cpu_seconds(ref.pid)
                t, rss = run_measured(cmd)
                results[name] = {"seconds": t, "client_rss_kib": rss,
                                 "client_cpu_s": LAST_CPU[0],
                                 "server_cpu_s": cpu_seconds(ref.pid) - s0}

            theirs("skopeo push", ["skopeo", "--insecure-policy", "copy",
                                   "--dest-tls-verify=false", f"dir:{layout}",
                                   f"docker://{ref_host}/bench:1"])
            theirs("skopeo pull", ["skopeo", "--insecure-policy", "copy",
                                   "--src-tls-verify=false", f"docker://{ref_host}/bench:1",
                                   f"dir:{os.path.join(work, 'dir-dst')}"])
            ref_rss = stop_measured(ref)
            procs.remove(ref)
            results["skopeo push"]["server_rss_kib"] = ref_rss
            results["skopeo pull"]["server_rss_kib"] = ref_rss
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)

    mb = nbytes / 1e6
    fl = results["floor"]["seconds"]
    print(f"\nregistry benchmark: {nbytes / (1 << 20):.0f} MiB in {args.layers} layers, "
          f"127.0.0.1, 2 processes per transfer\n")
    print(f"{'case':<36}{'seconds':>9}{'MB/s':>9}{'x floor':>9}{'client RSS':>12}"
          f"{'server RSS':>12}{'cli CPU s':>10}{'srv CPU s':>10}")
    for name, r in results.items():
        r["mb_per_s"] = mb / r["seconds"]
        r["x_floor"] = r["seconds"] / fl
        c = f"{r['client_rss_kib'] / 1024:.1f} MiB" if "client_rss_kib" in r else "-"
        s = f"{r['server_rss_kib'] / 1024:.1f} MiB" if "server_rss_kib" in r else "-"
        cc = f"{r['client_cpu_s']:.1f}" if "client_cpu_s" in r else "-"
        sc = f"{r['server_cpu_s']:.1f}" if "server_cpu_s" in r else "-"
        print(f"{name:<36}{r['seconds']:>9.2f}{r['mb_per_s']:>9.0f}{r['x_floor']:>9.2f}"
              f"{c:>12}{s:>12}{cc:>10}{sc:>10}")
    for op in ("push", "pull"):
        if f"skopeo {op}" in results:
            ratio = results[f"skopeo {op}"]["seconds"] / results[f"ours {op}"]["seconds"]
            print(f"ours {op} vs skopeo+docker-registry: {ratio:.2f}x as fast")
    load = os.getloadavg()
    print(f"load average during the run: {load[0]:.1f} (2 cores; other work on the machine "
          f"slows every row alike)")
    doc = {"bytes": nbytes, "layers": args.layers, "loadavg": load, "results": results}
    print(json.dumps(doc, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
