"""A self-signed certificate made for the test run with the openssl command (no extra Python
dependency): valid for 127.0.0.1, ::1 and localhost, and a second one for another name."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class TestCert:
    __test__ = False  # not a test class, whatever its name
    cert: str
    key: str


def make_self_signed(directory: Path, name: str = "localhost", *, san: str = "") -> TestCert:
    if shutil.which("openssl") is None:
        pytest.skip("the TLS tests need the openssl command (Debian: openssl)")
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-nodes", "-newkey", "ec",
         "-pkeyopt", "ec_paramgen_curve:prime256v1", "-days", "2",
         "-subj", f"/CN={name}", "-addext",
         f"subjectAltName={san or 'DNS:localhost,IP:127.0.0.1,IP:::1'}",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return TestCert(str(cert), str(key))
