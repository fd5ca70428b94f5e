"""Faces: dlib's HOG detector (or boxes another detector found: NudeNet's by default), 5-point alignment and
ResNet face embeddings (weights from face-recognition-models), compared by Euclidean distance with a gallery of
protected people (< 0.6 is dlib's same-person rule of thumb)."""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # left, top, right, bottom
    embedding: np.ndarray  # (128,) float32


@dataclass(frozen=True)
class GalleryMatch:
    person: str
    distance: float


def _model_dir() -> Path:
    """The weights folder of face-recognition-models, found without importing it (its import needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("face-recognition-models is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class FaceEmbedder:
    def __init__(self, upsample: int = 1):
        import dlib

        models = _model_dir()
        self._dlib = dlib
        self.upsample = upsample
        self._detector = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self._encoder = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def faces(self, image: Image.Image) -> list[Face]:
        """Every frontal face found, with its embedding."""
        arr = np.ascontiguousarray(np.asarray(image.convert("RGB")))
        rects = self._detector(arr, self.upsample)
        return [self._embed(arr, r) for r in rects]

    def embed_boxes(self, image: Image.Image, boxes: Sequence[tuple[int, int, int, int]]) -> list[Face]:
        """Embeddings of faces another detector found (left, top, right, bottom boxes)."""
        arr = np.ascontiguousarray(np.asarray(image.convert("RGB")))
        return [self._embed(arr, self._dlib.rectangle(*map(int, b))) for b in boxes]

    def embed_whole(self, image: Image.Image) -> Face:
        """Embedding of an image that is already a face crop (no detection)."""
        arr = np.ascontiguousarray(np.asarray(image.convert("RGB")))
        h, w = arr.shape[:2]
        return self._embed(arr, self._dlib.rectangle(0, 0, w - 1, h - 1))

    def _embed(self, arr: np.ndarray, rect) -> Face:
        shape = self._shape(arr, rect)
        vec = np.asarray(self._encoder.compute_face_descriptor(arr, shape), np.float32)
        return Face((rect.left(), rect.top(), rect.right(), rect.bottom()), vec)


class Gallery:
    """Protected people: one or more reference embeddings per person, stored as an .npz file."""

    def __init__(self, people: Sequence[str] = (), embeddings: np.ndarray | None = None):
        self.people = list(people)
        self.embeddings = np.zeros((0, 128), np.float32) if embeddings is None else embeddings.astype(np.float32)
        if len(self.people) != len(self.embeddings):
            raise ValueError("gallery: one person name per embedding")

    @classmethod
    def load(cls, path: str | Path) -> Gallery:
        with np.load(path, allow_pickle=False) as data:
            return cls([str(p) for p in data["people"]], data["embeddings"])

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:  # a file handle keeps numpy from appending ".npz" to the name
            np.savez(fh, people=np.array(self.people, dtype=str), embeddings=self.embeddings)

    def add(self, person: str, embedding: np.ndarray) -> None:
        self.people.append(person)
        self.embeddings = np.vstack([self.embeddings, embedding[None, :].astype(np.float32)])

    def best_match(self, embedding: np.ndarray) -> GalleryMatch | None:
        if not self.people:
            return None
        d = np.linalg.norm(self.embeddings - embedding[None, :], axis=1)
        i = int(np.argmin(d))
        return GalleryMatch(self.people[i], float(d[i]))
