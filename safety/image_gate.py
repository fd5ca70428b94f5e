"""Image gate: decode checks, NSFW scores (review and block bands), faces against the protected-person gallery."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .banks import BankConfig, BankMatch, HashBanks
from .faces import Face, FaceEmbedder, Gallery, GalleryMatch
from .inputs import ImageInputError, load_image
from .nsfw import NsfwScorer, NsfwScores
from .policy import PolicyPack, RegionPolicy
from .verdict import Decision, Verdict


@dataclass(frozen=True)
class ImageFindings:
    nsfw: NsfwScores
    faces: int
    match: GalleryMatch | None


def decide(rp: RegionPolicy, f: ImageFindings) -> Verdict:
    """Dual bands per check; a face in sexual content, or a protected person in it, is zero tolerance."""
    ip = rp.image
    sexual = f.nsfw.sexual
    nsfw_reason = f"sexual={sexual:.3f} (open_nsfw={f.nsfw.open_nsfw:.3f} nudenet={f.nsfw.nudenet:.3f}" + (
        f" {'+'.join(f.nsfw.labels)})" if f.nsfw.labels else ")")
    face_reason = f"faces={f.faces}" + (f" closest={f.match.person} distance={f.match.distance:.3f}" if f.match else "")
    reasons = (nsfw_reason, face_reason, f"review>={ip.sexual_review} block>={ip.sexual_block} region={rp.region}")

    def verdict(decision: Decision, stage: str, cats: tuple[str, ...], score: float) -> Verdict:
        return Verdict(decision, stage, rp.pack_id, rp.version, cats, round(score, 4), reasons)

    protected = f.match is not None and f.match.distance <= ip.face_review
    if sexual >= ip.sexual_review and (f.faces or protected):
        cats = ("ncii", "sexual") + (("protected_person",) if protected else ())
        return verdict(ip.face_with_sexual if not protected else Decision.BLOCK, "nsfw", cats, sexual)
    if sexual >= ip.sexual_block:
        return verdict(Decision.BLOCK, "nsfw", ("sexual",), sexual)
    if protected:
        decision = Decision.BLOCK if f.match.distance <= ip.face_block else Decision.REVIEW
        return verdict(decision, "faces", ("protected_person",), f.match.distance)
    if sexual >= ip.sexual_review:
        return verdict(Decision.REVIEW, "nsfw", ("sexual",), sexual)
    return verdict(Decision.ALLOW, "nsfw", (), sexual)


def bank_verdict(rp: RegionPolicy, matches: list[BankMatch]) -> Verdict:
    """A hash-bank match blocks outright, under the most severe matched bank's category, naming every matched bank
    (id, version) in the verdict and so in the audit."""
    m = matches[0]
    return Verdict(Decision.BLOCK, "hashbank", rp.pack_id, rp.version, (m.category, "hash_bank"), float(m.distance),
                   tuple(x.reason() for x in matches))


@dataclass(frozen=True)
class ImageChecksConfig:
    threads: int | None = None  # onnxruntime intra-op threads
    gallery: str | None = None  # overrides the pack's gallery path
    banks: str | None = None  # hash-bank directory; overrides the pack's `[image] banks`
    face_detector: str = "nudenet"  # "nudenet": its face boxes (no extra pass); "hog": dlib's frontal detector
    face_upsample: int = 1  # dlib HOG upsampling: 1 finds faces down to ~40 px


class LayeredImageGate:
    """The image gate behind `FailClosed`; models are loaded on the first `load()`."""

    def __init__(self, pack: PolicyPack, config: ImageChecksConfig = ImageChecksConfig()):
        self.pack = pack
        self.pack_id, self.pack_version = pack.id, pack.version
        self.config = config
        self._lock = threading.Lock()
        self._nsfw: NsfwScorer | None = None
        self._faces: FaceEmbedder | None = None
        self.gallery = Gallery()
        bank_dir = config.banks or pack.image.banks
        self.banks = HashBanks(BankConfig(Path(bank_dir))) if bank_dir else None

    def load(self) -> None:
        if self.config.face_detector not in ("nudenet", "hog"):
            raise ValueError(f"unknown face detector {self.config.face_detector!r} (nudenet or hog)")
        with self._lock:
            if self._nsfw is None:
                path = self.config.gallery or self.pack.image.gallery
                if path and Path(path).exists():
                    self.gallery = Gallery.load(path)
                self._faces = FaceEmbedder(self.config.face_upsample)
                self._nsfw = NsfwScorer(self.config.threads)

    def faces(self, image: Image.Image, scores: NsfwScores | None = None) -> list[Face]:
        """Faces with embeddings, from the configured detector."""
        self.load()
        if self.config.face_detector == "hog":
            return self._faces.faces(image)
        scores = scores or self._nsfw.scores([image])[0]
        return self._faces.embed_boxes(image, scores.faces)

    def screen(self, images: Sequence, region: str = "default") -> list[Verdict]:
        self.load()
        rp = self.pack.for_region(region)
        verdicts: list[Verdict | None] = [None] * len(images)
        good: list[tuple[int, Image.Image]] = []
        for i, item in enumerate(images):
            try:
                good.append((i, load_image(item, rp.limits)))
            except ImageInputError as exc:
                verdicts[i] = Verdict(Decision.REVIEW, "input", rp.pack_id, rp.version, (), None, (str(exc),))
        if self.banks is not None:
            unmatched = []
            for i, im in good:
                matches = self.banks.match_image(np.asarray(im.convert("RGB")))
                if matches:
                    verdicts[i] = bank_verdict(rp, matches)
                else:
                    unmatched.append((i, im))
            good = unmatched
        scores = self._nsfw.scores([im for _, im in good])
        for (i, im), s in zip(good, scores):
            if self.config.face_detector == "nudenet" and not self.gallery.people:
                count, best = len(s.faces), None  # nothing to compare with: skip the embeddings
            else:
                faces = self.faces(im, s)
                matches = [m for m in (self.gallery.best_match(f.embedding) for f in faces) if m]
                count, best = len(faces), min(matches, key=lambda m: m.distance, default=None)
            verdicts[i] = decide(rp, ImageFindings(s, count, best))
        return verdicts
