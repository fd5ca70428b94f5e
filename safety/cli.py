"""`hallmark safety ...`: screen prompts and images, calibrate thresholds, enroll protected faces."""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("safety", help="prompt and image safety gates")
    sub = p.add_subparsers(dest="safety_command", metavar="SUBCOMMAND", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--policy", help="policy pack file (.toml/.json); default: the shipped pack")
        sp.add_argument("--region", default="default", help="region or tier whose overrides apply")
        sp.add_argument("--threads", type=int, default=2, help="model threads (default 2)")

    sp = sub.add_parser("screen-prompts", help="screen prompts from stdin, one per line; JSON lines out")
    common(sp)
    sp.add_argument("--lexical-only", action="store_true", help="skip the embedding stage")
    sp.set_defaults(func=cmd_screen_prompts)

    si = sub.add_parser("screen-image", help="screen image files; one JSON line per file")
    common(si)
    si.add_argument("--gallery", help="protected-person gallery (.npz); default: the pack's")
    si.add_argument("files", nargs="+", metavar="FILE")
    si.set_defaults(func=cmd_screen_image)

    sc = sub.add_parser("calibrate", help="pick cluster thresholds on the labelled set; print precision/recall")
    sc.add_argument("--policy", help="policy pack to calibrate; default: the shipped pack")
    sc.add_argument("--devset", help="labelled prompts, '[<lang>\\t]<label>\\t<prompt>' per line; default: the shipped sets")
    sc.add_argument("--write", metavar="OUT", help="write the pack with the picked thresholds to OUT")
    sc.add_argument("--version", help="version for the written pack (required with --write)")
    sc.add_argument("--threads", type=int, default=2)
    sc.set_defaults(func=cmd_calibrate)

    st = sub.add_parser("train-classifier", help="train the n-gram prompt classifier on the labelled sets")
    st.add_argument("--devset", action="append", help="labelled prompts file (repeatable); default: the shipped sets")
    st.add_argument("--benign-rate", type=float, default=0.01,
                    help="share of benign prompts (out of fold) the review threshold may flag (default 0.01)")
    st.add_argument("--out", help="weights file to write (.npz); default: only print the threshold")
    st.set_defaults(func=cmd_train_classifier)

    se = sub.add_parser("enroll", help="add a protected person's face(s) to a gallery")
    se.add_argument("--gallery", required=True, help="gallery file (.npz), created if missing")
    se.add_argument("--name", required=True, help="the person's id in the gallery")
    se.add_argument("images", nargs="+", metavar="IMAGE")
    se.set_defaults(func=cmd_enroll)

    from .cli_banks import register as register_banks

    register_banks(sub)


def _line(v, **extra) -> str:
    return json.dumps({
        **extra, "decision": v.decision.value, "category": v.categories[0] if v.categories else None,
        "categories": list(v.categories), "stage": v.stage, "score": v.score,
        "policy": f"{v.policy_id}@{v.policy_version}", "reasons": list(v.reasons),
    })


def _pack_or_error(path: str | None):
    from hallmark.cli import CommandError

    from .policy import PolicyError, load_pack

    try:
        return load_pack(path)
    except PolicyError as exc:
        raise CommandError(str(exc)) from exc


def cmd_screen_prompts(args: argparse.Namespace) -> int:
    from .embedding import EncoderConfig
    from .gates import PromptGateConfig, load_prompt_gate

    _pack_or_error(args.policy)
    gate = load_prompt_gate(args.policy, PromptGateConfig(
        embedding=not args.lexical_only, encoder=EncoderConfig(threads=args.threads,
                                                               cache_dir=str(args.config.cache_dir))))
    # Bytes, not text: a line that is not UTF-8 gets its own fail-closed verdict instead of killing the run.
    lines = sys.stdin.buffer.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    batch = 64
    for start in range(0, len(lines), batch):
        chunk = [ln.rstrip(b"\r") for ln in lines[start:start + batch]]
        for v in gate.screen(chunk, region=args.region):
            print(_line(v), flush=False)
    sys.stdout.flush()
    return 0


def cmd_screen_image(args: argparse.Namespace) -> int:
    from .gates import ImageGateConfig, load_image_gate
    from .image_gate import ImageChecksConfig

    _pack_or_error(args.policy)
    gate = load_image_gate(args.policy, ImageGateConfig(ImageChecksConfig(threads=args.threads, gallery=args.gallery)))
    for name in args.files:
        v = gate.screen([Path(name)], region=args.region)[0]  # a path: the gate reads it and reports read errors
        print(_line(v, file=name), flush=True)
    return 0


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from hallmark.cli import CommandError

    from .calibrate import load_devset
    from .classifier import BENIGN, out_of_fold_harm, review_threshold, train

    if not 0.0 <= args.benign_rate < 1.0:
        raise CommandError("--benign-rate must be in [0, 1)")
    try:
        examples = load_devset(*(args.devset or []))
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read the development set: {exc}") from exc
    texts, labels = [e.text for e in examples], [e.label for e in examples]
    print(f"{len(examples)} labelled prompts; 5-fold out-of-fold scores ...", file=sys.stderr)
    try:
        oof = out_of_fold_harm(texts, labels)
    except ValueError as exc:
        raise CommandError(f"cannot train: {exc}") from exc
    threshold = review_threshold(oof, labels, args.benign_rate)
    print(f"review threshold {threshold:.4f} (flags {args.benign_rate:.1%} of benign prompts out of fold)")
    print("out of fold, flagged / n by label:")
    for label in sorted(set(labels)):
        s = oof[[k for k, lab in enumerate(labels) if lab == label]]
        print(f"  {label:<10} {int((s >= threshold).sum()):>5}/{len(s):<5} {(s >= threshold).mean():.2f}"
              + ("  (benign: should be low)" if label == BENIGN else ""))
    if args.out:
        train(texts, labels).save(args.out)
        print(f"wrote {args.out}; set the pack's [classifier] review = {threshold:.4f}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from hallmark.cli import CommandError

    from .calibrate import (
        apply_thresholds,
        calibrate,
        evaluate,
        format_margins,
        format_table,
        language_table,
        load_devset,
        write_thresholds,
    )
    from .embedding import EncoderConfig
    from .policy import DEFAULT_PACK, ClassifierPolicy
    from .prompt_gate import LayeredPromptGate

    if args.write and not args.version:
        raise CommandError("--write needs --version (every pack change gets a new version)")
    pack = _pack_or_error(args.policy)
    try:
        examples = load_devset(*([args.devset] if args.devset else []))
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot read the development set: {exc}") from exc
    enc = EncoderConfig(threads=args.threads, cache_dir=str(args.config.cache_dir))
    margins = calibrate(pack, examples, enc)
    thresholds = [m.thresholds for m in margins]
    tuned = apply_thresholds(pack, thresholds)
    # The n-gram classifier was trained on these very prompts: in-sample it flags ~every harmful one and no benign,
    # which would hide what the thresholds do. The tables measure lexical + embedding; `train-classifier` prints
    # the classifier's out-of-fold numbers.
    gate = LayeredPromptGate(replace(tuned, classifier=ClassifierPolicy()), True, enc)
    print(f"policy {pack.id}@{pack.version}; {len(examples)} labelled prompts; thresholds picked on the calib half;"
          " tables without the n-gram classifier (its out-of-fold numbers: hallmark safety train-classifier)")
    for split in ("calib", "holdout"):
        print()
        print(format_table(f"[{split}]", evaluate(gate, [e for e in examples if e.split == split])))
    print()
    print(format_table("[all]", evaluate(gate, examples)))
    print("\n[per language, all development prompts]")
    print(language_table(examples, gate.screen([e.text for e in examples]), pack.review.zero_tolerance))
    print("\nthresholds and margins (similarity after benign-anchor contrast; calib half):")
    print(format_margins(margins))
    if args.write:
        write_thresholds(Path(args.policy) if args.policy else DEFAULT_PACK, tuned, Path(args.write), args.version)
        print(f"wrote {args.write} (version {args.version})")
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    from hallmark.cli import CommandError

    from .faces import FaceEmbedder, Gallery
    from .inputs import ImageInputError, load_image
    from .policy import Limits

    path = Path(args.gallery)
    gallery = Gallery.load(path) if path.exists() else Gallery()
    embedder = FaceEmbedder()
    for name in args.images:
        try:
            image = load_image(Path(name), Limits())
        except ImageInputError as exc:
            raise CommandError(f"{name}: {exc}") from exc
        faces = embedder.faces(image)
        if not faces:
            raise CommandError(f"{name}: no face found")
        face = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))  # the main subject
        gallery.add(args.name, face.embedding)
    gallery.save(path)
    print(f"{path}: {len(gallery.people)} reference faces ({len(set(gallery.people))} people)")
    return 0
