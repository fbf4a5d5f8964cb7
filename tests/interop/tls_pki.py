"""A throw-away PKI for the registry TLS tests, made with the ``openssl`` command line (the
``cryptography`` package is not a dependency): a test CA, a server certificate for
``registry.test`` and 127.0.0.1 signed by it, and a client certificate for mutual TLS."""

from __future__ import annotations

import pathlib
import subprocess
from dataclasses import dataclass

#: the name the TLS tests give the registry; resolves to 127.0.0.1 only inside the mount
#: namespace the client runs in
HOST = "registry.test"

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Pki:
    ca_crt: pathlib.Path
    server_crt: pathlib.Path
    server_key: pathlib.Path
    client_crt: pathlib.Path
    client_key: pathlib.Path


def _openssl(openssl: str, *args: str, cwd: pathlib.Path) -> None:
    r = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {r.stderr}")


def _sign(openssl: str, d: pathlib.Path, name: str, subject: str, extensions: str,
          serial: int) -> None:
    _openssl(openssl, "req", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", subject, cwd=d)
    (d / f"{name}.ext").write_text(extensions)
    _openssl(openssl, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey",
             "ca.key", "-set_serial", str(serial), "-days", "3", "-out", f"{name}.crt",
             "-extfile", f"{name}.ext", cwd=d)


def make_pki(openssl: str, d: pathlib.Path) -> Pki:
    """Create the CA, server and client certificates (EC P-256, valid 3 days) in ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl(openssl, "req", "-x509", *_EC, "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "3", "-subj", "/CN=imagesim test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    _sign(openssl, d, "server", f"/CN={HOST}",
          f"subjectAltName=DNS:{HOST},IP:127.0.0.1\n"
          "basicConstraints=critical,CA:FALSE\n"
          "keyUsage=critical,digitalSignature\n"
          "extendedKeyUsage=serverAuth\n"
          "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n", 2)
    _sign(openssl, d, "client", "/CN=imagesim test client",
          "basicConstraints=critical,CA:FALSE\n"
          "keyUsage=critical,digitalSignature\n"
          "extendedKeyUsage=clientAuth\n"
          "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n", 3)
    return Pki(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt",
               d / "client.key")
