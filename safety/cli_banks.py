"""`hallmark safety banks add|list|match`: PDQ hash banks of known-bad images."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("banks", help="PDQ hash banks of known-bad images (ThreatExchange/HMA signal files)")
    bs = p.add_subparsers(dest="banks_command", metavar="SUBCOMMAND", required=True)

    def where(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--policy", help="policy pack whose `[image] banks` directory to use (default: var/banks)")
        sp.add_argument("--dir", help="bank directory (overrides the pack's)")

    a = bs.add_parser("add", help="add signals to a bank (created if missing); bumps its version")
    where(a)
    a.add_argument("bank_id")
    a.add_argument("--category", required=True, help="what the bank holds (csam, ncii, extremism, ...)")
    a.add_argument("--signals", nargs="*", default=[], metavar="FILE", help="CSV/JSON signal exports (PDQ rows)")
    a.add_argument("--image", nargs="*", default=[], metavar="IMAGE", help="images to hash (PDQ + crop views)")
    a.add_argument("--min-quality", type=int, default=None, metavar="Q",
                   help="PDQ quality (0-100) an image's hash needs to be banked (default 50, Meta's rule)")
    a.set_defaults(func=cmd_add)
    ls = bs.add_parser("list", help="one line per bank: id, category, version, signals, updated")
    where(ls)
    ls.set_defaults(func=cmd_list)
    m = bs.add_parser("match", help="match images (or PDQ hex values with --hash) against the banks; JSON lines")
    where(m)
    m.add_argument("--hash", nargs="*", default=[], metavar="PDQ", help="PDQ values (64 hex) to match")
    m.add_argument("files", nargs="*", metavar="IMAGE")
    m.set_defaults(func=cmd_match)


def _banks(args: argparse.Namespace):
    from hallmark.cli import CommandError

    from .banks import BankConfig, HashBanks
    from .policy import PolicyError, load_pack

    try:
        directory = args.dir or (load_pack(args.policy).image.banks if args.policy else args.config.banks_dir)
    except PolicyError as exc:
        raise CommandError(str(exc)) from exc
    if not directory:
        raise CommandError("the policy pack names no `[image] banks` directory: pass --dir")
    return HashBanks(BankConfig(Path(directory)))


def _rgb(name: str):
    import numpy as np

    from hallmark.cli import CommandError

    from .inputs import ImageInputError, load_image
    from .policy import Limits

    try:
        return np.asarray(load_image(Path(name), Limits()).convert("RGB"))
    except ImageInputError as exc:
        raise CommandError(f"{name}: {exc}") from exc


def cmd_add(args: argparse.Namespace) -> int:
    from hallmark.cli import CommandError

    from provenance.fingerprint import PDQ_MIN_QUALITY

    from .banks import BankError, flat_hash, image_signals, parse_signals

    if not args.signals and not args.image:
        raise CommandError("nothing to add: pass --signals FILE and/or --image IMAGE")
    banks = _banks(args)
    try:
        signals = [s for f in args.signals for s in parse_signals(Path(f).read_bytes(), Path(f).name)]
        flat = [s for s in signals if flat_hash(s.value)]
        if flat:  # exports do carry them (HMA filters by quality when matching): skip, and say which
            print(f"skipped {len(flat)} flat-image hash(es), which would match blank images: "
                  + ", ".join(s.source for s in flat[:5]) + (" ..." if len(flat) > 5 else ""), file=sys.stderr)
            signals = [s for s in signals if not flat_hash(s.value)]
        q = PDQ_MIN_QUALITY if args.min_quality is None else args.min_quality
        if not 0 <= q <= 100:
            raise CommandError(f"--min-quality {q}: PDQ quality runs from 0 to 100")
        signals += [s for f in args.image for s in image_signals(_rgb(f), Path(f).name, q)]
        before = next((len(b.signals) for b in banks.banks() if b.bank_id == args.bank_id), 0)
        bank = banks.add(args.bank_id, args.category, signals)
    except (OSError, BankError) as exc:
        raise CommandError(str(exc)) from exc
    print(f"{bank.bank_id} ({bank.category}): version {bank.version}, {len(bank.signals)} signals"
          f" ({len(bank.signals) - before} new)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from hallmark.cli import CommandError

    from .banks import BankError

    try:
        banks = _banks(args).banks()
    except BankError as exc:
        raise CommandError(str(exc)) from exc
    for b in banks:
        print(f"{b.bank_id}\t{b.category}\tv{b.version}\t{len(b.signals)} signals\t{b.updated}")
    return 0


def cmd_match(args: argparse.Namespace) -> int:
    from hallmark.cli import CommandError

    from .banks import BankError, is_pdq

    bad = [h for h in args.hash if not is_pdq(h.lower())]
    if bad:
        raise CommandError(f"--hash {bad[0]!r}: a PDQ value is 64 hex digits")
    banks = _banks(args)
    try:
        queries = [(h, banks.match_hashes([h.lower()])) for h in args.hash]
        queries += [(f, banks.match_image(_rgb(f))) for f in args.files]
    except BankError as exc:
        raise CommandError(str(exc)) from exc
    for name, matches in queries:
        print(json.dumps({"input": name, "blocked": bool(matches),
                          "matches": [{"bank": m.bank_id, "version": m.version, "category": m.category,
                                       "distance": m.distance} for m in matches]}))
    return 0
