"""Local keys: an ES256 test CA with a certificate fit for C2PA claim signing, and the server watermark secret."""
from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# C2PA 2.x accepts these EKUs for claim signing; anyExtendedKeyUsage is forbidden.
C2PA_CLAIM_SIGNING = x509.ObjectIdentifier("1.3.6.1.4.1.62558.2.1")
DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")


@dataclass(frozen=True)
class KeyPaths:
    """Where the signing material lives: EE key, EE+intermediate chain, and the trust anchor(s)."""

    private_key: Path
    cert_chain: Path
    trust_anchors: Path

    @classmethod
    def in_dir(cls, keys_dir: Path) -> "KeyPaths":
        d = Path(keys_dir)
        return cls(d / "signer.key.pem", d / "signer.chain.pem", d / "ca.cert.pem")

    def exist(self) -> bool:
        return self.private_key.is_file() and self.cert_chain.is_file()


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Hallmark Development"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def generate_test_ca(keys_dir: Path, days: int = 3650, overwrite: bool = False) -> KeyPaths:
    """Write a P-256 test CA and a CA-signed end-entity certificate for C2PA signing; return their paths."""
    import fcntl

    paths = KeyPaths.in_dir(keys_dir)
    if paths.exist() and not overwrite:
        return paths
    Path(keys_dir).mkdir(parents=True, exist_ok=True)
    # Several processes (publisher, verifier, CLI) may start at once on a fresh machine: one generates, all share.
    with open(Path(keys_dir) / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if paths.exist() and not overwrite:
            return paths
        _write_test_ca(Path(keys_dir), paths, days)
    return paths


def _write_test_ca(keys_dir: Path, paths: KeyPaths, days: int) -> None:
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Hallmark Development Test CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ee_key = ec.generate_private_key(ec.SECP256R1())
    ee_cert = (
        x509.CertificateBuilder().subject_name(_name("Hallmark Development Signer")).issuer_name(ca_name)
        .public_key(ee_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     key_cert_sign=False, crl_sign=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([C2PA_CLAIM_SIGNING, DOCUMENT_SIGNING,
                                              ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ee_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    _write(keys_dir / "ca.key.pem", _pem_key(ca_key), secret=True)
    _write(paths.trust_anchors, ca_cert.public_bytes(pem))
    _write(paths.private_key, _pem_key(ee_key), secret=True)
    _write(paths.cert_chain, ee_cert.public_bytes(pem) + ca_cert.public_bytes(pem))  # last: `exist()` checks it


def _write(path: Path, data: bytes, secret: bool = False) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(b"")
    if secret:
        tmp.chmod(0o600)  # before the key is in it
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass(frozen=True)
class WatermarkKey:
    """The server's watermark secret and its id; the payload of asset X is HMAC(secret, X) truncated."""

    key_id: str
    secret: bytes

    def __repr__(self) -> str:  # never print the secret
        return f"WatermarkKey(key_id={self.key_id!r})"


def watermark_key(keys_dir: Path) -> WatermarkKey:
    """The watermark key under `keys_dir` (`watermark.key`, mode 0600), generated on first use."""
    import fcntl
    import json
    import secrets

    path = Path(keys_dir) / "watermark.key"
    if not path.is_file():
        Path(keys_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(keys_dir) / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.is_file():
                secret = secrets.token_bytes(32)
                key_id = "wm-" + hashlib.sha256(b"hallmark/watermark-key-id\0" + secret).hexdigest()[:12]
                _write(path, json.dumps({"key_id": key_id, "secret": secret.hex()}).encode(), secret=True)
    data = json.loads(path.read_text())
    return WatermarkKey(data["key_id"], bytes.fromhex(data["secret"]))
