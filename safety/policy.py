"""Versioned policy packs: term sets, lexical rules, embedding clusters, image thresholds, per-region overrides."""
from __future__ import annotations

import json
import tomllib
import zipfile
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from .langpacks import Inflection, LanguagePack, inflection_table, load_language_pack, merged_sets
from .lexical import LexicalRule
from .verdict import Decision

DEFAULT_PACK = Path(__file__).parent / "packs" / "default.toml"
PROMPT_CATEGORIES = ("csam", "ncii", "violence", "extremism", "self_harm", "hate")
IMAGE_CATEGORIES = ("csam", "ncii", "sexual", "protected_person")
BENIGN_ANCHOR = "benign"  # clusters of this category are contrast anchors: they never fire, they discount others


class PolicyError(ValueError):
    """The policy pack file is missing, malformed or inconsistent."""


@dataclass(frozen=True)
class Cluster:
    """One prohibited-intent cluster: exemplar prompts and the similarity bands that review or block."""

    id: str
    category: str
    review: float
    block: float
    exemplars: tuple[str, ...]


@dataclass(frozen=True)
class ImagePolicy:
    """Dual thresholds for image checks. Sexual scores are probabilities; face distances are 128-d L2 distances."""

    sexual_review: float = 0.45
    sexual_block: float = 0.85
    face_review: float = 0.5  # distance to a protected face at or below this -> review
    face_block: float = 0.42  # ... at or below this -> block
    face_with_sexual: Decision = Decision.BLOCK  # zero tolerance: any face in a sexual-review-band image
    gallery: str | None = None  # path of the protected-person gallery (.npz), relative to the pack file
    banks: str | None = None  # directory of PDQ hash banks (safety.banks), relative to the pack file


@dataclass(frozen=True)
class Limits:
    max_prompt_chars: int = 10_000
    max_image_pixels: int = 40_000_000
    min_image_side: int = 16


@dataclass(frozen=True)
class ReviewPolicy:
    """How review treats categories: zero tolerance, urgency (severity 1 = most urgent) and the SLA per severity."""

    zero_tolerance: tuple[str, ...] = ("csam",)  # lexical rules block clear cases; cluster band -> urgent review
    urgent: tuple[str, ...] = ("csam", "self_harm", "protected_person")  # severity 1, worked first
    gate_error_severity: int = 2  # a gate that failed closed
    default_severity: int = 3  # any other review band hit
    sla_hours: Mapping[int, float] = field(default_factory=lambda: MappingProxyType({1: 1, 2: 4, 3: 24, 4: 72}))

    def is_urgent(self, category: str) -> bool:
        return category in self.urgent

    def severity(self, categories: tuple[str, ...] | list[str], failed_closed: bool) -> int:
        if any(self.is_urgent(c) for c in categories):
            return 1
        return self.gate_error_severity if failed_closed else self.default_severity

    def sla(self, severity: int) -> timedelta:
        return timedelta(hours=self.sla_hours[severity])


@dataclass(frozen=True)
class EmbeddingPolicy:
    """The `[embedding]` table: which prompts the encoder reads, and how near a threshold a fast score is rechecked."""

    # "any", or "latin" (only prompts with a Latin letter: the shipped encoder is English-only and scores other
    # scripts as noise; their language packs screen them).
    scripts: str = "any"
    # The encoder's first pass runs int8 weights and may only clear a prompt: one whose int8 score for some cluster
    # reaches that cluster's review threshold minus this is scored again in fp32, which decides, so verdicts are the
    # fp32 encoder's wherever int8 deviates less than this. 1.0 scores every prompt in fp32 alone.
    recheck_within: float = 0.1


@dataclass(frozen=True)
class SecondOpinion:
    """When an embedding block needs the lexical gate's agreement: within `margin` of the threshold, or off English."""

    margin: float = 0.06
    signals: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # category -> base term sets that corroborate
    always: tuple[str, ...] = ()  # categories whose embedding blocks always need the lexical signal


@dataclass(frozen=True)
class ClassifierPolicy:
    """The n-gram classifier (safety.classifier): its weights file and the score at which it asks for review."""

    model: str | None = None  # path of the .npz, relative to the pack file; None: no classifier stage
    review: float = 1.01  # 1 - P(benign) at or above this -> review (it never blocks)
    categories: tuple[str, ...] = PROMPT_CATEGORIES  # what it may raise (a region that allows one drops it here)


@dataclass(frozen=True)
class RegionPolicy:
    """The pack resolved for one region: what a gate actually applies."""

    pack_id: str
    version: str
    region: str
    rules: tuple[LexicalRule, ...]
    clusters: tuple[Cluster, ...]
    image: ImagePolicy
    limits: Limits
    second_opinion: SecondOpinion = field(default_factory=SecondOpinion)
    classifier: ClassifierPolicy = field(default_factory=ClassifierPolicy)


@dataclass(frozen=True)
class PolicyPack:
    id: str
    version: str
    term_sets: Mapping[str, tuple[str, ...]]
    rules: tuple[LexicalRule, ...]
    clusters: tuple[Cluster, ...]
    image: ImagePolicy
    limits: Limits
    review: ReviewPolicy = field(default_factory=ReviewPolicy)
    regions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    source: Path | None = None
    languages: tuple[LanguagePack, ...] = ()
    # Inflection rules by set language (None: the untagged base sets, which follow `lexical.base_language`).
    inflections: Mapping[str | None, tuple[Inflection, ...]] = field(default_factory=lambda: MappingProxyType({}))
    second_opinion: SecondOpinion = field(default_factory=SecondOpinion)
    embedding: EmbeddingPolicy = field(default_factory=EmbeddingPolicy)
    classifier: ClassifierPolicy = field(default_factory=ClassifierPolicy)

    def for_region(self, region: str = "default") -> RegionPolicy:
        """Apply the region's overrides (cluster thresholds by id or category, rule actions, image thresholds)."""
        if region != "default" and region not in self.regions:
            raise PolicyError(f"policy pack {self.id}@{self.version} has no region {region!r}")
        over = self.regions.get(region, {})
        cl_over = over.get("clusters", {})
        clusters = tuple(
            replace(c, **{**cl_over.get(c.category, {}), **cl_over.get(c.id, {})}) for c in self.clusters
        )
        actions = over.get("rule_actions", {})
        rules = tuple(replace(r, action=Decision(actions[r.id])) if r.id in actions else r for r in self.rules)
        image = replace(self.image, **over.get("image", {}))
        if "face_with_sexual" in over.get("image", {}):
            image = replace(image, face_with_sexual=Decision(image.face_with_sexual))
        classifier = replace(self.classifier, **over.get("classifier", {}))  # checked by _classifier_override
        return RegionPolicy(self.id, self.version, region, rules, clusters, image, self.limits, self.second_opinion,
                            classifier)


def load_pack(path: str | Path | None = None) -> PolicyPack:
    """Read a pack from .toml or .json; default: the pack shipped in safety/packs/."""
    p = Path(path) if path else DEFAULT_PACK
    try:
        raw = p.read_bytes()
        data = json.loads(raw) if p.suffix == ".json" else tomllib.loads(raw.decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise PolicyError(f"cannot read policy pack {p}: {exc}") from exc
    try:
        return _parse(data, p)
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise PolicyError(f"policy pack {p}: {type(exc).__name__}: {exc}") from exc


def _parse(data: dict, source: Path) -> PolicyPack:
    lex = data.get("lexical", {})
    lang_dir = source.parent / lex.get("language_dir", "lang")
    languages = tuple(load_language_pack(lang_dir / f"{code}.toml") for code in lex.get("languages", ()))
    sets = merged_sets({name: tuple(terms) for name, terms in lex.get("sets", {}).items()}, languages)
    rules = tuple(
        LexicalRule(r["id"], r["category"], Decision(r["action"]), tuple(r["all_of"])) for r in lex.get("rules", ())
    )
    clusters = tuple(
        Cluster(c["id"], c["category"], float(c.get("review", 1.0)), float(c.get("block", 1.0)), tuple(c["exemplars"]))
        for c in data.get("clusters", ())
    )
    for c in clusters:
        if c.category not in PROMPT_CATEGORIES + (BENIGN_ANCHOR,) or not c.exemplars or c.block < c.review:
            raise ValueError(f"cluster {c.id!r}: unknown category, no exemplars, or block < review")
    for r in rules:
        if r.category not in PROMPT_CATEGORIES:
            raise ValueError(f"rule {r.id!r}: unknown category {r.category!r}")
    img = dict(data.get("image", {}))
    if "face_with_sexual" in img:
        img["face_with_sexual"] = Decision(img["face_with_sexual"])
    for key in ("gallery", "banks"):
        if img.get(key):
            img[key] = str((source.parent / img[key]).resolve())
    regions = {name: MappingProxyType(dict(v)) for name, v in data.get("regions", {}).items()}
    for name, v in regions.items():
        if "classifier" in v:
            regions[name] = MappingProxyType({**v, "classifier": _classifier_override(v["classifier"], name)})
    return PolicyPack(
        id=str(data["id"]), version=str(data["version"]), term_sets=MappingProxyType(sets), rules=rules,
        clusters=clusters, image=ImagePolicy(**img), limits=Limits(**data.get("limits", {})),
        review=_review(data.get("review", {})), regions=MappingProxyType(regions), source=source,
        languages=languages, second_opinion=_second_opinion(data.get("second_opinion", {})),
        inflections=MappingProxyType(inflection_table(languages, lex.get("base_language"))),
        embedding=_embedding(data.get("embedding", {})),
        classifier=_classifier(data.get("classifier", {}), source),
    )


def _classifier(data: dict, source: Path) -> ClassifierPolicy:
    """The `[classifier]` table: weights file (relative to the pack, loaded here to check it), review threshold in
    [0, 1] and the categories it may raise."""
    if not data:
        return ClassifierPolicy()
    unknown = sorted(set(data) - {"model", "review", "categories"})
    if unknown:
        raise ValueError(f"[classifier] has unknown keys: {', '.join(unknown)}")
    from .classifier import PromptClassifier

    model = (source.parent / str(data["model"])).resolve()
    try:
        classes = PromptClassifier.load(model).classes
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"[classifier] model {model} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    if set(classes) - set(PROMPT_CATEGORIES) - {BENIGN_ANCHOR}:
        raise ValueError(f"[classifier] model {model} has classes outside the prompt categories: {classes}")
    return ClassifierPolicy(str(model), **_classifier_override({k: v for k, v in data.items() if k != "model"}))


def _classifier_override(data: Any, where: str = "[classifier]") -> dict:
    """`review` (a number in [0, 1]) and `categories` (known prompt categories): for the pack or one region."""
    if not isinstance(data, Mapping) or set(data) - {"review", "categories"}:
        raise ValueError(f"{where}: classifier settings take only 'review' and 'categories'")
    out: dict[str, Any] = {}
    if "review" in data:
        review = data["review"]
        if isinstance(review, bool) or not isinstance(review, (int, float)) or not 0.0 <= review <= 1.0:
            raise ValueError(f"{where}: classifier review must be a number in [0, 1], not {review!r}")
        out["review"] = float(review)
    if "categories" in data:
        cats = tuple(data["categories"])
        if set(cats) - set(PROMPT_CATEGORIES):
            raise ValueError(f"{where}: classifier categories must be prompt categories, not {list(cats)}")
        out["categories"] = cats
    return out


def _embedding(data: dict) -> EmbeddingPolicy:
    """The `[embedding]` table: `scripts` ("any" or "latin") and `recheck_within` (a number in [0, 1])."""
    unknown = sorted(set(data) - {"scripts", "recheck_within"})
    if unknown:
        raise ValueError(f"[embedding] has unknown keys: {', '.join(unknown)}")
    scripts = data.get("scripts", "any")
    if scripts not in ("any", "latin"):
        raise ValueError(f"embedding.scripts must be 'any' or 'latin', not {scripts!r}")
    within = data.get("recheck_within", EmbeddingPolicy.recheck_within)
    if isinstance(within, bool) or not isinstance(within, (int, float)) or not 0 <= within <= 1:
        raise ValueError(f"embedding.recheck_within must be a number in [0, 1], not {within!r}")
    return EmbeddingPolicy(scripts, float(within))


def _second_opinion(data: dict) -> SecondOpinion:
    """The `[second_opinion]` table: a margin and, per prompt category, the term sets that corroborate it."""
    signals = {k: tuple(v) for k, v in data.get("signals", {}).items()}
    always = tuple(data.get("always", ()))
    unknown = sorted((set(signals) | set(always)) - set(PROMPT_CATEGORIES))
    if unknown:
        raise ValueError(f"[second_opinion] names unknown categories: {', '.join(unknown)}")
    return SecondOpinion(float(data.get("margin", 0.06)), MappingProxyType(signals), always)


def _review(data: dict) -> ReviewPolicy:
    """The `[review]` table; every category it names must be a known one and every severity needs an SLA."""
    fields = {k: tuple(data[k]) for k in ("zero_tolerance", "urgent") if k in data}
    fields |= {k: int(data[k]) for k in ("gate_error_severity", "default_severity") if k in data}
    if "sla_hours" in data:
        fields["sla_hours"] = MappingProxyType({int(k): float(v) for k, v in data["sla_hours"].items()})
    review = ReviewPolicy(**fields)
    known = set(PROMPT_CATEGORIES) | set(IMAGE_CATEGORIES)
    unknown = sorted(set(review.zero_tolerance + review.urgent) - known)
    if unknown:
        raise ValueError(f"[review] names unknown categories: {', '.join(unknown)}")
    missing = {1, review.gate_error_severity, review.default_severity} - set(review.sla_hours)
    if missing:
        raise ValueError(f"[review.sla_hours] has no SLA for severity {sorted(missing)}")
    return review
