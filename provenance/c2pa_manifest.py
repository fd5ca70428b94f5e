"""C2PA: build and sign the `c2pa.created` manifest (with soft-binding assertions) with c2pa-python; read manifests."""
from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
GENERATION_LABEL = "org.hallmark.generation"
SOFT_BINDING_LABEL = "c2pa.soft-binding"
SUPPORTED_MIME = ("image/png", "image/jpeg")
_TRUST_CODES = {"signingCredential.untrusted"}


@dataclass(frozen=True)
class SigningMaterial:
    """PEM paths of the ES256 signing key, its certificate chain (end-entity first) and the trusted roots."""

    private_key: Path
    cert_chain: Path
    trust_anchors: Path | None = None
    tsa_url: str = ""  # RFC 3161 timestamp authority; "" = no timestamp


@dataclass(frozen=True)
class SoftBinding:
    """One soft binding of the asset: a C2PA soft-binding algorithm id and its raw value (base64 in the manifest)."""

    alg: str
    value: bytes
    name: str = ""


@dataclass(frozen=True)
class ManifestFacts:
    asset_id: str
    model_id: str
    policy_version: str
    software_name: str = "hallmark"
    software_version: str = "0.1.0"
    soft_bindings: tuple[SoftBinding, ...] = ()


def soft_binding_assertion(binding: SoftBinding) -> dict:
    """A `c2pa.soft-binding` assertion: one block covering the whole image."""
    data = {"alg": binding.alg, "pad": [], "blocks": [{"scope": {}, "value": base64.b64encode(binding.value).decode()}]}
    if binding.name:
        data["name"] = binding.name
    return {"label": SOFT_BINDING_LABEL, "data": data}


def manifest_definition(facts: ManifestFacts) -> dict:
    """The manifest we sign: one `c2pa.created` action and our generation assertion."""
    agent = {"name": facts.software_name, "version": facts.software_version}
    return {
        "claim_generator_info": [agent],
        "title": facts.asset_id,
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [{
                "action": "c2pa.created",
                "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                "softwareAgent": agent,
                "parameters": {"model_id": facts.model_id, "policy_version": facts.policy_version},
            }]}},
            {"label": GENERATION_LABEL, "data": {
                "asset_id": facts.asset_id, "model_id": facts.model_id, "policy_version": facts.policy_version}},
            *(soft_binding_assertion(b) for b in facts.soft_bindings),
        ],
    }


def _context(trust_anchors: Path | None):
    import c2pa

    settings: dict = {"builder": {"thumbnail": {"enabled": False}}}  # a full-size PNG thumbnail would triple the file
    if trust_anchors is not None and Path(trust_anchors).is_file():
        settings["trust"] = {"trust_anchors": Path(trust_anchors).read_text()}
        settings["verify"] = {"verify_trust": True}
    return c2pa.Context.from_dict(settings)


class ManifestSigner:
    """Signs images with one ES256 key; holds the native signer and context, so build once per process."""

    def __init__(self, material: SigningMaterial):
        import c2pa

        info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, Path(material.cert_chain).read_bytes(),
                                   Path(material.private_key).read_bytes(), material.tsa_url or None)
        self._signer = c2pa.Signer.from_info(info)
        self._context = _context(material.trust_anchors)

    def sign(self, data: bytes, mime: str, facts: ManifestFacts) -> tuple[bytes, str]:
        """Return (signed image bytes, manifest label)."""
        signed, label, _ = self.sign_with_store(data, mime, facts)
        return signed, label

    def sign_with_store(self, data: bytes, mime: str, facts: ManifestFacts) -> tuple[bytes, str, bytes]:
        """Return (signed image bytes, manifest label, the manifest store alone as `application/c2pa` bytes)."""
        import c2pa

        if mime not in SUPPORTED_MIME:
            raise ValueError(f"cannot sign {mime}; supported: {', '.join(SUPPORTED_MIME)}")
        out = io.BytesIO()
        builder = c2pa.Builder(manifest_definition(facts), context=self._context)
        store = builder.sign(self._signer, mime, io.BytesIO(data), out)
        signed = out.getvalue()
        label = json.loads(c2pa.Reader(mime, io.BytesIO(signed), context=self._context).json())["active_manifest"]
        return signed, label, bytes(store)


@dataclass
class C2paResult:
    """The `c2pa` part of a verification answer."""

    present: bool = False
    valid: bool = False
    trusted: bool = False
    signer: str | None = None
    claim_generator: str | None = None
    assertions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    label: str | None = None
    generation: dict | None = None  # our own assertion, when present
    soft_bindings: list[dict] = field(default_factory=list)  # the data of each `c2pa.soft-binding` assertion

    def public(self) -> dict:
        return {"present": self.present, "valid": self.valid, "trusted": self.trusted, "signer": self.signer,
                "claim_generator": self.claim_generator, "assertions": self.assertions, "errors": self.errors}


class ManifestReader:
    """Reads and validates manifests against the configured trust anchors."""

    def __init__(self, trust_anchors: Path | None = None):
        self._context = _context(trust_anchors)

    def read(self, data: bytes, mime: str) -> C2paResult:
        import c2pa

        try:
            reader = c2pa.Reader(mime, io.BytesIO(data), context=self._context)
            store = json.loads(reader.json())
        except c2pa.C2paError as exc:
            if "ManifestNotFound" in type(exc).__name__ or "ManifestNotFound" in str(exc):
                return C2paResult()
            return C2paResult(present=True, errors=[f"unreadable manifest: {exc}"])
        label = store.get("active_manifest")
        manifest = store.get("manifests", {}).get(label, {})
        state = store.get("validation_state") or ""
        failures = store.get("validation_results", {}).get("activeManifest", {}).get("failure", [])
        errors = [f"{f.get('code')}: {f.get('explanation', '')}".strip() for f in failures]
        info = manifest.get("signature_info", {})
        gen = manifest.get("claim_generator_info") or []
        generator = " ".join(f"{g.get('name', '')}/{g.get('version', '')}".strip("/") for g in gen[:1]) or None
        assertions = [a.get("label", "") for a in manifest.get("assertions", [])]
        generation = next((a.get("data") for a in manifest.get("assertions", [])
                           if a.get("label") == GENERATION_LABEL), None)
        bindings = [a.get("data") or {} for a in manifest.get("assertions", [])
                    if a.get("label", "").split("__")[0] == SOFT_BINDING_LABEL]
        signer = ", ".join(x for x in (info.get("common_name"), info.get("issuer")) if x) or None
        # "valid" is about integrity (signature, hashes); whether we trust the signer is reported apart.
        integrity_failures = [f for f in failures if f.get("code") not in _TRUST_CODES]
        return C2paResult(present=True, valid=bool(manifest) and not integrity_failures,
                          trusted=state == "Trusted", signer=signer, claim_generator=generator,
                          assertions=assertions, errors=errors, label=label, generation=generation,
                          soft_bindings=bindings)
