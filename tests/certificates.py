"""Throwaway certificates for TLS tests, made at test time with the openssl command line."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def self_signed_certificate(folder, san: str) -> tuple:
    """(key.pem, cert.pem) for TLS tests; san is e.g. "IP:127.0.0.1" or "DNS:clip.test"."""
    key, cert = folder / "key.pem", folder / "cert.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={san.split(':', 1)[1]}",
             "-addext", f"subjectAltName={san}")  # fmt: skip
    return key, cert


@dataclass(frozen=True)
class Issued:
    key: Path
    cert: Path


class Authority:
    """A private CA in `folder`; `issue` signs server or client certificates with it."""

    def __init__(self, folder: Path, name: str = "test-ca"):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.name = folder, name
        self.key, self.cert = folder / f"{name}.key", folder / f"{name}.pem"
        _openssl("req", "-x509", *EC_KEY, "-keyout", str(self.key), "-out", str(self.cert),
                 "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip

    def issue(self, name: str, san: str = "IP:127.0.0.1,DNS:localhost") -> Issued:
        """A certificate for servers and clients alike (both extended key usages)."""
        issued = Issued(self.folder / f"{name}.key", self.folder / f"{name}.pem")
        _openssl("req", "-x509", *EC_KEY, "-keyout", str(issued.key), "-out", str(issued.cert),
                 "-subj", f"/CN={name}", "-CA", str(self.cert), "-CAkey", str(self.key),
                 "-addext", f"subjectAltName={san}", "-addext", "basicConstraints=CA:FALSE",
                 "-addext", "extendedKeyUsage=serverAuth,clientAuth")  # fmt: skip
        return issued
