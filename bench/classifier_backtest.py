"""Does the n-gram classifier generalise? A backtest on development data written after an older pack.

    .venv/bin/python bench/classifier_backtest.py --rev e329489      # pack 2.2.0, before the round-2 batches

The gate of revision REV (its code and its pack, in a temporary git worktree) screens the development files that
did not exist at REV: prompts its lists were never tuned on, like a blind split. The classifier is trained only on
the files that did exist at REV, its review threshold picked out of fold on them; the bench prints how many of the
new harmful prompts the old gate caught, and how many it catches with the classifier's review added, and the same
for benign prompts. Sealed splits are never read.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from safety.calibrate import DEFAULT_DEVSETS, load_devset  # noqa: E402
from safety.classifier import BENIGN, out_of_fold_harm, review_threshold, train  # noqa: E402

_SCREEN = """
import json, sys
sys.path.insert(0, sys.argv[1])
from safety.calibrate import load_devset
from safety.embedding import EncoderConfig
from safety.gates import PromptGateConfig, load_prompt_gate
gate = load_prompt_gate(config=PromptGateConfig(encoder=EncoderConfig(threads=1)))
out = {}
for path in sys.argv[2:]:
    out[path] = [v.decision.value for v in gate.screen([e.text for e in load_devset(path)])]
print(json.dumps(out))
"""


def files_at(rev: str) -> set[str]:
    names = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", rev, "safety/data/"],
                           check=True, capture_output=True, text=True).stdout.split()
    return {Path(n).name for n in names}


def old_gate_decisions(rev: str, paths: list[Path]) -> dict[str, list[str]]:
    """Decisions of REV's gate on the given files, in a worktree of REV (its code and pack, today's data files)."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True,
                       capture_output=True)
        try:
            out = subprocess.run([sys.executable, "-c", _SCREEN, str(tree), *map(str, paths)], check=True,
                                 capture_output=True, text=True, cwd=tree).stdout
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=True)
    return json.loads(out.splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", default="e329489", help="the older revision (default: pack 2.2.0)")
    ap.add_argument("--benign-rate", type=float, default=0.01, help="out-of-fold benign share the threshold flags")
    args = ap.parse_args()
    old = files_at(args.rev)
    before = [p for p in DEFAULT_DEVSETS if p.name in old]
    after = [p for p in DEFAULT_DEVSETS if p.name not in old]
    assert not any("sealed" in p.name for p in before + after), "sealed splits are report-only"
    if not after:
        print(f"every development file existed at {args.rev}: nothing to test on")
        return 1
    train_ex = load_devset(*before)
    texts, labels = [e.text for e in train_ex], [e.label for e in train_ex]
    print(f"train: {len(train_ex)} prompts in {', '.join(p.name for p in before)}", file=sys.stderr)
    threshold = review_threshold(out_of_fold_harm(texts, labels), labels, args.benign_rate)
    model = train(texts, labels)
    decisions = old_gate_decisions(args.rev, after)
    print(f"classifier trained on the {len(train_ex)} development prompts that existed at {args.rev}; "
          f"review >= {threshold:.3f} ({args.benign_rate:.1%} of them benign out of fold)")
    print(f"{'file':<28} {'harmful caught: gate':>22} {'+ classifier':>13} {'benign not allowed: gate':>26} "
          f"{'+ classifier':>13}")
    tot = np.zeros(6, int)
    for p in after:
        ex = load_devset(p)
        gate = np.array([d != "allow" for d in decisions[str(p)]])
        flag = model.harm([e.text for e in ex])[0] >= threshold
        harmful = np.array([e.label != BENIGN for e in ex])
        row = np.array([harmful.sum(), gate[harmful].sum(), (gate | flag)[harmful].sum(),
                        (~harmful).sum(), gate[~harmful].sum(), (gate | flag)[~harmful].sum()])
        tot += row
        print(f"{p.name:<28} {row[1]:>14}/{row[0]:<7} {row[2]:>13} {row[4]:>18}/{row[3]:<7} {row[5]:>13}")
    print(f"{'all':<28} {tot[1]:>14}/{tot[0]:<7} {tot[2]:>13} {tot[4]:>18}/{tot[3]:<7} {tot[5]:>13}")
    print(f"harmful caught {tot[1] / tot[0]:.3f} -> {tot[2] / tot[0]:.3f}; "
          f"benign not allowed {tot[4] / tot[3]:.3f} -> {tot[5] / tot[3]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
