"""The client's transport rules against real TLS registries, through the real CLI.

Issue 6: plain HTTP only for localhost, 127.0.0.0/8 and the config's insecure-registries;
HTTPS otherwise, trusting the system store plus ``certs.d/HOST:PORT/ca.crt`` next to the config
file (docker's ``/etc/docker/certs.d``). To test a registry that is *not* loopback by name
without leaving 127.0.0.1, the registry is called ``registry.test``: every CLI run happens in
its own mount namespace (``unshare --mount``) where a private hosts file is bind-mounted on
``/etc/hosts`` and maps that name to 127.0.0.1. Nothing outside the test sees the name.

The servers are real: ``imagesim registry serve --tls-cert --tls-key`` and the reference
registry (Debian's ``docker-registry``, ``http.tls``), with certificates made by ``openssl``.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pathlib
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator

import httpx
import pytest

from imagesim import oci
from imagesim.digest import Digest
from imagesim.reference import Reference
from imagesim.store import Store
from tests.conftest import need_root, need_tool, unavailable
from tests.interop.tls_pki import HOST, Pki, make_pki

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCKER_REGISTRY = "/usr/bin/docker-registry"
USER, PASSWORD = "tlsuser", "s3cret-tls"
_PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


# -- set-up ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(need_tool("openssl"), tmp_path_factory.mktemp("pki"))


class ChallengeAuth(httpx.Auth):
    """The test's own answer to a registry's 401 (independent of imagesim's client): Basic,
    or a Bearer token fetched from the challenge's realm with Basic credentials."""

    requires_response_body = True  # the token response's JSON

    def __init__(self, username: str, password: str) -> None:
        self.basic = httpx.BasicAuth(username, password)

    def auth_flow(self, request: httpx.Request):
        response = yield request
        if response.status_code != 401:
            return
        challenge = response.headers.get("www-authenticate", "")
        if challenge.lower().startswith("basic"):
            yield from self.basic.auth_flow(request)
            return
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        token_request = httpx.Request("GET", params["realm"], params={
            "service": params.get("service", ""), "scope": params.get("scope", "")})
        token_response = yield next(self.basic.auth_flow(token_request))
        request.headers["Authorization"] = f"Bearer {token_response.json()['token']}"
        yield request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    """One registry process on 127.0.0.1: ours (``imagesim registry serve``) or the reference
    one, over HTTPS (``tls``) or plain HTTP, optionally with htpasswd auth or (reference only)
    required client certificates."""

    def __init__(self, kind: str, workdir: pathlib.Path, pki: Pki, *, tls: bool,
                 htpasswd: pathlib.Path | None = None, auth: str | None = None,
                 client_cas: bool = False) -> None:
        self.kind, self.tls, self.pki = kind, tls, pki
        self.port = free_port()
        self.name = f"{HOST}:{self.port}"
        self.auth = ChallengeAuth(USER, PASSWORD) if htpasswd else None
        storage = workdir / f"{kind}-storage-{self.port}"
        storage.mkdir()
        self.log_path = workdir / f"{kind}-{self.port}.log"
        if kind == "ours":
            cmd = [sys.executable, "-m", "imagesim", "registry", "serve", "--addr",
                   f"127.0.0.1:{self.port}", "--root", str(storage)]
            if tls:
                cmd += ["--tls-cert", str(pki.server_crt), "--tls-key", str(pki.server_key)]
            if htpasswd is not None:
                cmd += ["--htpasswd", str(htpasswd)]
            if auth is not None:
                cmd += ["--auth", auth]
        else:
            if not os.path.exists(DOCKER_REGISTRY):
                need_tool("docker-registry")
            conf = ["version: 0.1", "log:", "  level: error",
                    "storage:", "  filesystem:", f"    rootdirectory: {storage}",
                    "http:", f"  addr: 127.0.0.1:{self.port}"]
            if tls:
                conf += ["  tls:", f"    certificate: {pki.server_crt}",
                         f"    key: {pki.server_key}"]
                if client_cas:
                    conf += ["    clientcas:", f"      - {pki.ca_crt}"]
            if htpasswd is not None:
                conf += ["auth:", "  htpasswd:", "    realm: tls-realm", f"    path: {htpasswd}"]
            config = workdir / f"registry-{self.port}.yml"
            config.write_text("\n".join(conf) + "\n")
            cmd = [DOCKER_REGISTRY, "serve", str(config)]
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, cwd=ROOT,
                                     env=_env())
        try:
            self._wait()
        except BaseException:
            self.stop()
            raise

    def client(self) -> httpx.Client:
        """A client of the test process itself, by address (the certificate names
        127.0.0.1 too), verifying against the test CA; with a client certificate."""
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_crt))
        ctx.load_cert_chain(str(self.pki.client_crt), str(self.pki.client_key))
        scheme = "https" if self.tls else "http"
        return httpx.Client(base_url=f"{scheme}://127.0.0.1:{self.port}", verify=ctx,
                            auth=self.auth, trust_env=False, timeout=10)

    def _wait(self) -> None:
        deadline = time.monotonic() + 30
        with self.client() as c:
            while True:
                try:
                    c.get("/v2/")
                    return
                except httpx.HTTPError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{self.kind} registry did not start: "
                                           f"{self.log_path.read_text()[-2000:]}") from None
                    time.sleep(0.1)

    def catalog(self) -> list[str]:
        with self.client() as c:
            resp = c.get("/v2/_catalog")
            resp.raise_for_status()
            return resp.json().get("repositories") or []

    def manifest_digest(self, repo: str, tag: str) -> str:
        with self.client() as c:
            resp = c.head(f"/v2/{repo}/manifests/{tag}", headers={"Accept": oci.OCI_MANIFEST})
            resp.raise_for_status()
            return resp.headers["docker-content-digest"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _env() -> dict[str, str]:
    # never a proxy: every connection of these tests stays on 127.0.0.1
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARS}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    return env


_namespaces_ok: bool | None = None


def need_mount_namespace(unshare: str) -> None:
    """Root, and a kernel/container that lets us make a mount namespace and bind-mount a file
    in it (probed once for real)."""
    global _namespaces_ok
    need_root()
    if _namespaces_ok is None:
        r = subprocess.run([unshare, "--mount", "--propagation", "private", "sh", "-c",
                            "mount --bind /etc/hosts /etc/hosts"], capture_output=True,
                           timeout=30)
        _namespaces_ok = r.returncode == 0
    if not _namespaces_ok:
        unavailable("cannot bind-mount /etc/hosts in a new mount namespace (unshare --mount)")


class Client:
    """The imagesim CLI as a user runs it, in a private mount namespace whose /etc/hosts maps
    ``registry.test`` (and ``other.test``) to 127.0.0.1, with its own config file and store."""

    def __init__(self, workdir: pathlib.Path) -> None:
        self.unshare = need_tool("unshare")
        need_tool("mount")
        need_mount_namespace(self.unshare)
        self.workdir = workdir
        self.hosts = workdir / "hosts"
        self.hosts.write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.0.1\t{HOST}\n"
                              f"127.0.0.1\tother.test\n")
        self.config_dir = workdir / "config"
        self.config_dir.mkdir()
        self.config_path = self.config_dir / "config.json"

    def run(self, *args: str, store: pathlib.Path, stdin: str | None = None
            ) -> subprocess.CompletedProcess[str]:
        env = _env()
        env["IMAGESIM_CONFIG"] = str(self.config_path)
        script = 'mount --bind "$0" /etc/hosts && exec "$@"'
        cmd = [self.unshare, "--mount", "--propagation", "private", "sh", "-c", script,
               str(self.hosts), sys.executable, "-m", "imagesim", "--root", str(store), *args]
        return subprocess.run(cmd, env=env, cwd=ROOT, input=stdin, capture_output=True,
                              text=True, timeout=120)

    def trust(self, registry: str, ca: pathlib.Path) -> None:
        d = self.config_dir / "certs.d" / registry
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(ca, d / "ca.crt")

    def insecure(self, *entries: str) -> None:
        data = json.loads(self.config_path.read_text()) if self.config_path.exists() else {}
        data["insecure-registries"] = list(entries)
        self.config_path.write_text(json.dumps(data))

    def config(self) -> dict:
        return json.loads(self.config_path.read_text()) if self.config_path.exists() else {}


@pytest.fixture
def cli(tmp_path) -> Iterator[Client]:
    with open("/etc/hosts", "rb") as f:
        before = f.read()
    yield Client(tmp_path)
    with open("/etc/hosts", "rb") as f:
        after = f.read()
    # the private hosts file never leaks out of the client's namespace
    assert after == before and HOST.encode() not in after


@pytest.fixture
def registries(tmp_path, pki) -> Iterator:
    started: list[Registry] = []

    def start(kind: str, *, tls: bool = True, htpasswd: pathlib.Path | None = None,
              auth: str | None = None, client_cas: bool = False) -> Registry:
        reg = Registry(kind, tmp_path, pki, tls=tls, htpasswd=htpasswd, auth=auth,
                       client_cas=client_cas)
        started.append(reg)
        return reg

    yield start
    for reg in started:
        reg.stop()


def layer_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_image(root: pathlib.Path, tag: str):
    """A two-layer OCI image (gzip layers) tagged ``tag`` in a new store at ``root``."""
    store = Store(root, fsync=False)
    descs, diffs = [], []
    for files in ({"etc/os-release": b"ID=tls\n"}, {"srv/data": os.urandom(64_000)}):
        raw = layer_tar(files)
        packed = gzip.compress(raw, mtime=0)
        descs.append(oci.Descriptor(oci.OCI_LAYER_GZIP, store.blobs.put(packed), len(packed)))
        diffs.append(str(Digest.of(raw)))
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                      "rootfs": {"type": "layers", "diff_ids": diffs}}).encode()
    config = oci.Descriptor(oci.OCI_CONFIG, store.blobs.put(cfg), len(cfg))
    return store.add_image(oci.build_manifest(config, descs, oci.OCI_MANIFEST), tags=[tag])


def push_and_pull(cli: Client, reg: Registry, tmp_path: pathlib.Path, repo: str) -> None:
    """Push an image to ``reg`` by its ``registry.test`` name and pull it into a fresh store:
    the digest is the same everywhere (local, registry, pulled)."""
    ref = f"{reg.name}/{repo}:1"
    image = make_image(tmp_path / "src", ref)
    r = cli.run("push", ref, store=tmp_path / "src")
    assert r.returncode == 0, r.stderr
    size = len(image.manifest_bytes)
    assert r.stdout.splitlines()[-1] == f"1: digest: {image.digest} size: {size}"
    assert r.stdout.count(": Pushed\n") == 2
    assert reg.manifest_digest(repo, "1") == str(image.digest)
    r = cli.run("pull", ref, store=tmp_path / "dst")
    assert r.returncode == 0, r.stderr
    assert f"Digest: {image.digest}\n" in r.stdout
    assert "Status: Downloaded newer image for " + ref in r.stdout
    pulled = Store(tmp_path / "dst", fsync=False).resolve(Reference.parse(ref))
    assert pulled.digest == image.digest
    assert pulled.manifest_bytes == image.manifest_bytes


def assert_nothing_stored(reg: Registry, store: pathlib.Path) -> None:
    assert reg.catalog() == []
    assert Store(store, fsync=False).images() == []


# -- cases -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["ours", "reference"])
def test_push_and_pull_over_https_with_a_trusted_ca(cli, registries, tmp_path, pki, kind):
    reg = registries(kind)
    cli.trust(reg.name, pki.ca_crt)
    push_and_pull(cli, reg, tmp_path, "tls/app")
    assert "insecure-registries" not in cli.config()


@pytest.mark.parametrize("kind", ["ours", "reference"])
def test_an_untrusted_certificate_is_refused(cli, registries, tmp_path, kind):
    reg = registries(kind)
    ref = f"{reg.name}/tls/app:1"
    make_image(tmp_path / "src", ref)
    for verb, store in (("push", tmp_path / "src"), ("pull", tmp_path / "dst")):
        r = cli.run(verb, ref, store=store)
        assert r.returncode == 1, (verb, r.stdout, r.stderr)
        err = r.stderr
        assert "TLS certificate verification failed: x509: certificate signed by unknown " \
               "authority" in err
        assert f"{cli.config_dir}/certs.d/{reg.name}/ca.crt" in err
        assert f"add '{reg.name}' to insecure-registries in {cli.config_path}" in err
        assert "Pushed" not in r.stdout and "Pulling from" not in r.stdout
    assert_nothing_stored(reg, tmp_path / "dst")


def test_a_certificate_for_another_name_is_refused(cli, registries, tmp_path, pki):
    # the CA is trusted, but the certificate names registry.test, not other.test
    reg = registries("ours")
    name = f"other.test:{reg.port}"
    cli.trust(name, pki.ca_crt)
    r = cli.run("pull", f"{name}/tls/app:1", store=tmp_path / "dst")
    assert r.returncode == 1
    assert "x509: certificate is not valid for other.test" in r.stderr
    assert "Hostname mismatch" in r.stderr


@pytest.mark.parametrize("kind", ["ours", "reference"])
def test_an_insecure_registry_over_tls_skips_verification(cli, registries, tmp_path, kind):
    reg = registries(kind)  # TLS only, certificate not trusted: works only over unverified TLS
    cli.insecure(reg.name)
    push_and_pull(cli, reg, tmp_path, "insecure/tls")


@pytest.mark.parametrize("kind", ["ours", "reference"])
def test_an_insecure_registry_over_plain_http_falls_back(cli, registries, tmp_path, kind):
    reg = registries(kind, tls=False)
    cli.insecure(f"http://{reg.name}")  # docker accepts the scheme prefix too
    push_and_pull(cli, reg, tmp_path, "insecure/plain")


@pytest.mark.parametrize("kind", ["ours", "reference"])
def test_plain_http_is_refused_for_a_registry_that_is_not_insecure(cli, registries, tmp_path,
                                                                     kind):
    reg = registries(kind, tls=False)
    ref = f"{reg.name}/plain/app:1"
    make_image(tmp_path / "src", ref)
    cli.insecure(f"other.test:{reg.port}", "10.0.0.0/8")  # listed: others, not this one
    mark = reg.log_path.stat().st_size
    for verb, store in (("push", tmp_path / "src"), ("pull", tmp_path / "dst")):
        r = cli.run(verb, ref, store=store)
        assert r.returncode == 1, (verb, r.stdout, r.stderr)
        assert "http: server gave HTTP response to HTTPS client" in r.stderr
        assert f"add '{reg.name}' to insecure-registries" in r.stderr
    if kind == "ours":
        # our server logs every request: only TLS handshakes arrived, no request in clear
        with open(reg.log_path, "rb") as f:
            f.seek(mark)
            seen = f.read().decode()
        assert "Invalid HTTP request received." in seen
        assert "HTTP/1.1\"" not in seen, seen
    assert_nothing_stored(reg, tmp_path / "dst")


@pytest.mark.parametrize(("kind", "auth"), [("ours", "basic"), ("reference", None),
                                            ("ours", "token")])
def test_login_over_https_with_htpasswd(cli, registries, tmp_path, pki, kind, auth):
    # basic auth on both servers; and the Bearer flow, whose token realm is https too
    htpasswd = tmp_path / "htpasswd"
    r = subprocess.run([need_tool("htpasswd"), "-Bbn", USER, PASSWORD], capture_output=True,
                       text=True, check=True)
    htpasswd.write_text(r.stdout)
    reg = registries(kind, htpasswd=htpasswd, auth=auth)
    cli.trust(reg.name, pki.ca_crt)
    store = tmp_path / "src"
    r = cli.run("login", reg.name, "-u", USER, "--password-stdin", store=store,
                stdin="wrong\n")
    assert r.returncode == 1
    assert "unauthorized: incorrect username or password" in r.stderr
    assert "Login Succeeded" not in r.stdout
    assert "auths" not in cli.config()
    r = cli.run("login", reg.name, "-u", USER, "--password-stdin", store=store,
                stdin=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Login Succeeded\n"
    assert list(cli.config()["auths"]) == [reg.name]
    assert os.stat(cli.config_path).st_mode & 0o777 == 0o600
    push_and_pull(cli, reg, tmp_path, "private/app")  # with the stored credentials


def test_a_client_certificate_from_certs_d(cli, registries, tmp_path, pki):
    # the reference registry asks for a client certificate signed by the test CA
    reg = registries("reference", client_cas=True)
    cli.trust(reg.name, pki.ca_crt)
    r = cli.run("pull", f"{reg.name}/mtls/app:1", store=tmp_path / "dst")
    assert r.returncode == 1
    assert "the registry refused the client certificate, or wants one" in r.stderr
    assert f"NAME.cert and NAME.key in {cli.config_dir}/certs.d/{reg.name}/" in r.stderr
    d = cli.config_dir / "certs.d" / reg.name
    shutil.copy(pki.client_crt, d / "client.cert")
    shutil.copy(pki.client_key, d / "client.key")
    push_and_pull(cli, reg, tmp_path, "mtls/app")


def test_a_loopback_reference_registry_over_tls(registries, tmp_path, monkeypatch):
    # 127.0.0.1 is insecure by rule: plain HTTP first (Go answers 400 on its TLS port), then
    # HTTPS without verification
    from imagesim.config import ClientConfig
    from imagesim.registry import client
    monkeypatch.setenv("IMAGESIM_CONFIG", str(tmp_path / "config.json"))
    reg = registries("reference")
    ref = f"127.0.0.1:{reg.port}/loop/app:1"
    image = make_image(tmp_path / "src", ref)
    with client.RegistrySession(f"127.0.0.1:{reg.port}", ClientConfig.load()) as sess:
        assert sess.base == f"https://127.0.0.1:{reg.port}"
        pushed = client.push(Store(tmp_path / "src", fsync=False), ref,
                             reporter=client.NullReporter(), session=sess)
    assert pushed.digest == image.digest
    assert reg.manifest_digest("loop/app", "1") == str(image.digest)


def test_skopeo_verifies_our_tls_registry(registries, tmp_path, pki, monkeypatch):
    # a second TLS client (Go's crypto/tls in skopeo) checks our server's certificate by its
    # IP SAN, with the CA from a cert dir (the certs.d layout), and copies byte for byte
    from imagesim.config import ClientConfig
    from imagesim.registry import client
    skopeo = need_tool("skopeo")
    monkeypatch.setenv("IMAGESIM_CONFIG", str(tmp_path / "config.json"))
    reg = registries("ours")
    ref = f"127.0.0.1:{reg.port}/tls/app:1"
    image = make_image(tmp_path / "src", ref)
    client.push(Store(tmp_path / "src", fsync=False), ref, config=ClientConfig.load(),
                reporter=client.NullReporter())
    certs = tmp_path / "skopeo-certs"
    certs.mkdir()
    shutil.copy(pki.ca_crt, certs / "ca.crt")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([skopeo, "--insecure-policy", *args], capture_output=True,
                              text=True, timeout=120, env=_env())

    r = run("inspect", "--raw", f"docker://{ref}")  # no CA given: refused
    assert r.returncode != 0
    assert "certificate signed by unknown authority" in r.stderr
    r = run("inspect", "--cert-dir", str(certs), f"docker://{ref}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["Digest"] == str(image.digest)
    r = run("copy", "--src-cert-dir", str(certs), "--dest-cert-dir", str(certs),
            f"docker://{ref}", f"docker://127.0.0.1:{reg.port}/tls/copy:2")
    assert r.returncode == 0, r.stderr
    assert reg.manifest_digest("tls/copy", "2") == str(image.digest)
