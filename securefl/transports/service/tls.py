"""TLS material for the network service: who may connect, and who is who.

The service runs over TLS only. With mutual TLS (the default) a client proves its id
with a certificate issued by the deployment's CA whose common name is
``securefl-client-<id>``; the server also checks the id against its enrollment list, so
a certificate alone does not let a client into a session it was not enrolled in. The
helpers that *create* a CA and certificates are for tests and first experiments
(``securefl serve --init-pki``); a deployment uses its own PKI.

Security
--------
Private keys are held as PEM bytes and never appear in ``repr``; the files
:func:`write_pki` creates are readable by their owner only.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from securefl.errors import ConfigError

__all__ = [
    "ClientTLS",
    "ServerTLS",
    "check_certificates",
    "check_key_pair",
    "client_common_name",
    "issue",
    "make_ca",
    "parse_client_id",
    "write_pki",
]

_CN_PREFIX = "securefl-client-"
_CN = re.compile(r"securefl-client-(0|[1-9][0-9]{0,9})")


def client_common_name(client_id: int) -> str:
    """The certificate common name that identifies client ``client_id``."""
    return f"{_CN_PREFIX}{client_id}"


def parse_client_id(common_name: str) -> int | None:
    """The client id a certificate's common name names, or ``None`` if it names none."""
    match = _CN.fullmatch(common_name)
    return None if match is None else int(match.group(1))


@dataclass(frozen=True)
class ServerTLS:
    """The server's certificate chain and key, and the CA its clients' certificates
    must chain to (``None``: server-side TLS only, for the authenticated mode)."""

    certificate: bytes
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = None
    files: tuple[str, ...] = field(default=(), repr=False, compare=False)
    """Where the PEM came from (certificate, key, client CA), for error messages."""

    @classmethod
    def from_files(cls, cert: str, key: str, client_ca: str | None) -> ServerTLS:
        """Load PEM files and :meth:`check` them.

        Raises
        ------
        ConfigError
            If a file cannot be read or :meth:`check` fails.
        """
        tls = cls(
            _read(cert),
            _read(key),
            None if client_ca is None else _read(client_ca),
            (cert, key, client_ca or ""),
        )
        tls.check()
        return tls

    def check(self) -> None:
        """Check the material before any handshake: gRPC would only say "Invalid
        private key" on its log, and refuse every connection.

        Raises
        ------
        ConfigError
            If a PEM does not parse, the key is not the certificate's, the certificate
            is not valid now, or the client CA is not a certificate.
        """
        cert, key, ca = (*self.files, "", "", "")[:3]
        check_key_pair(
            self.certificate, self.private_key, cert or "the server certificate", key or "its key"
        )
        if self.client_ca is not None:
            check_certificates(self.client_ca, ca or "the client CA")


@dataclass(frozen=True)
class ClientTLS:
    """The CA that signed the server's certificate, and (mutual TLS) the client's own
    certificate chain and key."""

    server_ca: bytes
    certificate: bytes | None = None
    private_key: bytes | None = field(default=None, repr=False)
    files: tuple[str, ...] = field(default=(), repr=False, compare=False)
    """Where the PEM came from (server CA, certificate, key), for error messages."""

    @classmethod
    def from_files(cls, server_ca: str, cert: str | None, key: str | None) -> ClientTLS:
        """Load PEM files and :meth:`check` them.

        Raises
        ------
        ConfigError
            If a file cannot be read, only one of ``cert`` and ``key`` is given, or
            :meth:`check` fails.
        """
        if (cert is None) != (key is None):
            raise ConfigError("a client certificate needs its key, and a key its certificate")
        tls = cls(
            _read(server_ca),
            None if cert is None else _read(cert),
            None if key is None else _read(key),
            (server_ca, cert or "", key or ""),
        )
        tls.check()
        return tls

    @property
    def ca_name(self) -> str:
        """The server CA's file, or a description of it."""
        return self.files[0] if self.files and self.files[0] else "the server CA"

    def check(self) -> None:
        """Check the material before connecting (a key that is not the certificate's
        would otherwise fail every handshake with a vague gRPC error).

        Raises
        ------
        ConfigError
            If a PEM does not parse, the key is not the certificate's, or the
            certificate is not valid now.
        """
        ca, cert, key = (*self.files, "", "", "")[:3]
        check_certificates(self.server_ca, ca or "the server CA")
        if self.certificate is not None and self.private_key is not None:
            check_key_pair(
                self.certificate,
                self.private_key,
                cert or "the client certificate",
                key or "its key",
            )


def check_certificates(pem: bytes, name: str) -> list[x509.Certificate]:
    """The certificates in ``pem`` (a chain or a CA bundle), each valid now.

    Raises
    ------
    ConfigError
        If ``pem`` holds no PEM certificate, or one is expired or not yet valid;
        ``name`` (a file name) says which.
    """
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ConfigError(f"{name} is not a PEM certificate") from None
    now = datetime.datetime.now(datetime.timezone.utc)
    for cert in certificates:
        subject = cert.subject.rfc4514_string()
        # An expired certificate fails every handshake with no word of why.
        if now > cert.not_valid_after_utc:
            expired = cert.not_valid_after_utc
            raise ConfigError(f"the certificate {subject} in {name} expired on {expired:%Y-%m-%d}")
        if now < cert.not_valid_before_utc:
            raise ConfigError(
                f"the certificate {subject} in {name} is not valid before "
                f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
            )
    return certificates


def check_key_pair(certificate: bytes, private_key: bytes, cert_name: str, key_name: str) -> None:
    """Check that ``private_key`` is the key of the first certificate in ``certificate``.

    Raises
    ------
    ConfigError
        If either does not parse (or the key is encrypted), or they do not match; the
        names (file names) say which.
    """
    leaf = check_certificates(certificate, cert_name)[0]
    try:
        key = serialization.load_pem_private_key(private_key, password=None)
    except (ValueError, TypeError) as exc:
        # TypeError: the key is encrypted; gRPC cannot ask for a password either.
        raise ConfigError(f"{key_name} is not an unencrypted PEM private key ({exc})") from None
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        raise ConfigError(
            f"the key {key_name} does not match the certificate {cert_name} (a key of "
            "another certificate?)"
        )


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(name: str = "securefl test CA", days: int = 365) -> tuple[bytes, bytes]:
    """A self-signed CA: (certificate PEM, private key PEM). For tests and trials."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def issue(
    ca_certificate: bytes,
    ca_key: bytes,
    common_name: str,
    *,
    hosts: Iterable[str] = (),
    days: int = 365,
) -> tuple[bytes, bytes]:
    """A certificate signed by the CA: (certificate PEM, private key PEM).

    Parameters
    ----------
    common_name:
        ``client_common_name(id)`` for a client; anything for a server.
    hosts:
        For a server certificate: the DNS names and IP addresses clients connect to
        (subject alternative names). Empty for a client certificate.
    """
    ca_cert = x509.load_pem_x509_certificate(ca_certificate)
    signer = serialization.load_pem_private_key(ca_key, password=None)
    if not isinstance(signer, ec.EllipticCurvePrivateKey):
        raise ConfigError("the CA key must be an EC key (as make_ca creates)")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    hosts = list(hosts)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if hosts else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if hosts:
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(signer, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_pki(
    directory: str | os.PathLike[str],
    client_ids: Iterable[int],
    *,
    hosts: Iterable[str] = ("localhost", "127.0.0.1"),
) -> Path:
    """Create a test PKI and enrollment in ``directory``.

    Writes ``ca.pem`` (and ``ca.key``), ``server.pem`` / ``server.key``, for every id
    ``client-<id>.pem`` / ``client-<id>.key`` (mutual TLS) and ``client-<id>.ed25519``
    (its identity key for the authenticated mode, raw 32 bytes hex), and
    ``enrollment.json``: ``{"clients": {"<id>": "<Ed25519 public key, hex>"}}``.

    Returns
    -------
    Path
        The directory.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = make_ca()
    (out / "ca.pem").write_bytes(ca_cert)
    _write_secret(out / "ca.key", ca_key)
    cert, key = issue(ca_cert, ca_key, "securefl-server", hosts=hosts)
    (out / "server.pem").write_bytes(cert)
    _write_secret(out / "server.key", key)
    enrolled: dict[str, str] = {}
    for cid in client_ids:
        cert, key = issue(ca_cert, ca_key, client_common_name(cid))
        (out / f"client-{cid}.pem").write_bytes(cert)
        _write_secret(out / f"client-{cid}.key", key)
        identity = Ed25519PrivateKey.generate()
        raw = identity.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        _write_secret(out / f"client-{cid}.ed25519", raw.hex().encode())
        public = identity.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        enrolled[str(cid)] = public.hex()
    (out / "enrollment.json").write_text(json.dumps({"clients": enrolled}, indent=2) + "\n")
    return out
