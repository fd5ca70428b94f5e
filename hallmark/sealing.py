"""Prompts sealed to a tenant's public key (HPKE, RFC 9180: DHKEM X25519, HKDF-SHA256, AES-256-GCM).

The HTTP API seals on a caller's behalf; a backend that produces straight to Kafka seals with `seal_spec` and its
tenant's public key (`hallmark tenants add` prints it), so no shared secret leaves the platform:

    from hallmark.sealing import seal_spec
    spec = seal_spec({"prompt": "a red circle", "seed": 1}, public_key_b64, key_id, tenant, request_id)
    # → the `spec` of a `request.submitted` event for topic `requests.<tenant>`

The HPKE `info` binds each ciphertext to its tenant, request and field: a sealed prompt copied into another
request, tenant or field does not open. (It travels unchanged through every event of its request, so it is bound
to the request id rather than to each event's id.)
"""
from __future__ import annotations

import base64
from typing import Any

from schemas.events import SealedText

FIELDS = ("prompt", "negative_prompt")


def _suite():
    from cryptography.hazmat.primitives import hpke

    return hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def _info(tenant: str, request_id: str, field: str) -> bytes:
    return f"hallmark/prompt/v1|{tenant}|{request_id}|{field}".encode()


def public_key(b64: str):
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    return X25519PublicKey.from_public_bytes(base64.b64decode(b64))


def seal(text: str, public_key_b64: str, key_id: str, tenant: str, request_id: str, field: str) -> SealedText:
    ct = _suite().encrypt(text.encode("utf-8"), public_key(public_key_b64), info=_info(tenant, request_id, field))
    return SealedText(key_id=key_id, ct=base64.b64encode(ct).decode())


def unseal(sealed: SealedText, private_key, tenant: str, request_id: str, field: str) -> str:
    """The text; raises `cryptography.exceptions.InvalidTag` for the wrong key, tenant, request or field."""
    return _suite().decrypt(base64.b64decode(sealed.ct), private_key, info=_info(tenant, request_id, field)).decode()


def seal_spec(spec: dict[str, Any], public_key_b64: str, key_id: str, tenant: str, request_id: str) -> dict:
    """A copy of a request spec with `prompt` and a non-empty `negative_prompt` sealed: the backend helper."""
    out = dict(spec)
    for name in FIELDS:
        if isinstance(out.get(name), str) and out[name]:
            out[name] = seal(out[name], public_key_b64, key_id, tenant, request_id, name).model_dump()
    return out


class ClearPrompt(ValueError):
    """A prompt field in clear where only sealed prompts may travel (reason code `clear_prompt`)."""


def open_spec(spec, keys, tenant: str, request_id: str, allow_clear: bool = False) -> tuple[str, str]:
    """(prompt, negative prompt) of a sealed spec, opened in memory with the tenant's private key.

    Raises `ClearPrompt` for a clear prompt (unless `allow_clear`: only with sealing switched off to measure it), `hallmark.tenant_keys.Shredded` when the tenant's key is gone, and
    `cryptography.exceptions.InvalidTag` for a ciphertext that is not this request's.
    """
    texts = []
    for name in FIELDS:
        value = getattr(spec, name)
        if isinstance(value, str):
            if value and not allow_clear:
                raise ClearPrompt(name)
            texts.append(value)
            continue
        texts.append(unseal(value, keys.private(tenant, value.key_id), tenant, request_id, name))
    return texts[0], texts[1]


def reason_code(exc: Exception) -> str:
    """The stable reason code of a failure to open a spec (for dlq and outcomes: never the text)."""
    from hallmark.tenant_keys import Shredded

    if isinstance(exc, ClearPrompt):
        return "clear_prompt"
    if isinstance(exc, Shredded):
        return "tenant_shredded"
    return "sealed_prompt_unreadable"
