"""A development certificate authority, with the ``cryptography`` package.

``hubctl nats-config --tls`` uses it when no certificates are given: one CA, a server
certificate for the names and addresses the server answers on, and (for mutual TLS) one
client certificate per NATS user. Production deployments bring their own PKI
(``--tls-cert``, ``--tls-key``, ``--tls-ca``); these are for development and tests.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from referral_hub.runtime.broker.credentials import write_secret

VALID_DAYS: Final = 365
DEFAULT_SERVER_NAMES: Final = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, both PEM."""

    certificate: bytes
    private_key: bytes


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Referral Hub (development)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _alt_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
    )


@dataclass(frozen=True)
class DevelopmentCa:
    """A CA that signs server and client certificates."""

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls) -> DevelopmentCa:
        """A new self-signed CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name("Referral Hub development CA")
        certificate = (
            _builder(name, name, key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    @property
    def pem(self) -> bytes:
        """The CA certificate, which clients trust."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(self, common_name: str, names: Iterable[str], *, server: bool) -> Issued:
        """A leaf certificate for a server (with its names) or a client (``names`` may be empty)."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = _builder(_name(common_name), self.certificate.subject, key).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        alt_names = [_alt_name(name) for name in names]
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        certificate = builder.sign(self.key, hashes.SHA256())
        return Issued(certificate.public_bytes(serialization.Encoding.PEM), _pem_key(key))


def write_development_pki(
    tls_dir: Path, server_names: Iterable[str], client_names: Iterable[str] = ()
) -> tuple[Path, Path, Path]:
    """Write a CA, a server certificate and client certificates; return (cert, key, ca) paths.

    Private keys are written 0600; the CA's key is not kept, so nothing more can be signed
    with it: run the command again to issue a new set.
    """
    ca = DevelopmentCa.create()
    tls_dir.mkdir(parents=True, exist_ok=True)
    ca_path = tls_dir / "ca.pem"
    ca_path.write_bytes(ca.pem)
    server = ca.issue("nats-server", server_names, server=True)
    cert_path, key_path = tls_dir / "server.pem", tls_dir / "server-key.pem"
    cert_path.write_bytes(server.certificate)
    write_secret(key_path, server.private_key)
    for client in client_names:
        issued = ca.issue(client, (), server=False)
        (tls_dir / "clients").mkdir(exist_ok=True)
        (tls_dir / "clients" / f"{client}.pem").write_bytes(issued.certificate)
        write_secret(tls_dir / "clients" / f"{client}-key.pem", issued.private_key)
    return cert_path, key_path, ca_path
