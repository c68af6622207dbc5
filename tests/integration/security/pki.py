"""A throwaway certificate authority made with the `openssl` command line.

`Pki(dir).ca("test-ca")` makes a CA; `.issue(ca, "node1.test")` a client
certificate whose common name is the etcd user it stands for;
`.issue(ca, "etcd", server=True)` a server certificate for 127.0.0.1 and
localhost. EC P-256 keys: each file takes milliseconds.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


class Pki:
    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def _openssl(self, *args: str) -> None:
        subprocess.run(["openssl", *args], cwd=self.dir, check=True, capture_output=True)

    def ca(self, name: str) -> Issued:
        cert, key = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                      "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
                      "-subj", f"/CN={name}")
        return Issued(cert, key)

    def issue(self, ca: Issued, name: str, server: bool = False) -> Issued:
        cert, key, csr = (self.dir / f"{name}.{ext}" for ext in ("crt", "key", "csr"))
        ext = self.dir / f"{name}.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
                       if server else "extendedKeyUsage=clientAuth\n")
        self._openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                      "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
        self._openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
                      "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
        return Issued(cert, key)
