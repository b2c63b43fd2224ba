"""Test certificates for mutual TLS: a trustme CA, and leaf certificates with SPIFFE URIs.

trustme makes the CAs; it has no URI subject alternative names, so the leaves are signed
here with `cryptography` (which trustme itself uses) by the CA's key.

    pki = Pki(tmp_path)
    files = pki.issue("model")   # TlsFiles for spiffe://mesh.test/service/model
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Final

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from transport import TlsFiles, identity_uri

TRUST_DOMAIN: Final = "mesh.test"


class Pki:
    """One CA (a trustme CA) writing its bundle and leaves under `directory`."""

    def __init__(self, directory: Path, name: str = "ca") -> None:
        self.directory = directory
        self.ca = trustme.CA()
        self.name = name
        self.bundle = directory / f"{name}-bundle.pem"
        self.ca.cert_pem.write_to_path(str(self.bundle))
        self._ca_key = serialization.load_pem_private_key(
            self.ca.private_key_pem.bytes(), password=None
        )
        self._ca_cert = x509.load_pem_x509_certificate(self.ca.cert_pem.bytes())

    def issue(
        self, service: str, *, trust_domain: str = TRUST_DOMAIN, stem: str | None = None
    ) -> TlsFiles:
        """Write a key and a certificate for `service`; returns the files with this CA's bundle."""
        uri = identity_uri(trust_domain, service)
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        assert isinstance(self._ca_key, ec.EllipticCurvePrivateKey | type(self._ca_key))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)]))
            .issuer_name(self._ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self._ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        stem = stem or f"{self.name}-{service}"
        cert_path = self.directory / f"{stem}.pem"
        key_path = self.directory / f"{stem}.key"
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return TlsFiles(cert=str(cert_path), key=str(key_path), ca=str(self.bundle))
