"""PDQ hash banks: ThreatExchange/HMA imports, versions, matching edited copies, the image gate and the CLI."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from hallmark.cli import main
from provenance.fingerprint import distance, pdq, pdq_dihedral
from safety.banks import BankConfig, BankError, HashBanks, Signal, flat_hash, image_signals, parse_signals
from safety.failclosed import Deadline, FailClosed
from safety.image_gate import ImageChecksConfig, LayeredImageGate, bank_verdict
from safety.policy import load_pack
from safety.verdict import Decision

A = "f" * 32 + "0" * 32  # hashes of image content set 128 of 256 bits
B = "0123456789abcdef" * 4


def _flip(value: str, n: int) -> str:
    """`value` with its lowest n bits of each half flipped (distance 2n; as many bits set as before for A)."""
    mask = (1 << n) - 1
    return f"{int(value, 16) ^ mask ^ (mask << 128):064x}"


def _jpeg(im: Image.Image, quality: int = 75) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _crop(im: Image.Image, left: float, top: float, right: float, bottom: float) -> Image.Image:
    w, h = im.size
    return im.crop((round(w * left), round(h * top), round(w * (1 - right)), round(h * (1 - bottom))))


@pytest.fixture(scope="module")
def banked() -> Image.Image:
    return Image.fromarray(data.astronaut()).convert("RGB")


def edits(im: Image.Image) -> dict[str, Image.Image]:
    """The image as banked, as JPEG q75, and 10% crops (centred, one corner, one side), each also as JPEG q75."""
    return {"original": im, "jpeg75": _jpeg(im), "crop10-centre": _jpeg(_crop(im, .05, .05, .05, .05)),
            "crop10-corner": _jpeg(_crop(im, .1, .1, 0, 0)), "crop10-side": _jpeg(_crop(im, 0, 0, .1, 0)),
            "crop10-top": _jpeg(_crop(im, 0, .1, 0, 0))}


@pytest.mark.parametrize("text", [
    f"signal_type,signal,id\npdq,{A},te-1\nmd5,abc,te-2\npdq,{B},te-3\n",  # HMA bank export
    f"indicator_type,indicator,id\nHASH_PDQ,{A},1\nHASH_PDQ,{B},2\n",  # ThreatExchange indicator CSV
    f"pdq,{A}\npdq,{B}\n",  # headerless type,value
    f"{A}\n{B}\n",  # bare values
    json.dumps([{"signal_type": "pdq", "signal_value": A}, {"signal_type": "pdq", "signal_value": B}]),
    json.dumps({"signals": [{"hash": A}, {"hash": B, "id": "x"}]}),
    json.dumps({"pdq": [A, B], "md5": ["abc"]}),
])
def test_threatexchange_and_hma_signal_files_import(text):
    assert [s.value for s in parse_signals(text.encode(), "export")] == [A, B]


def test_a_malformed_pdq_value_is_an_error():
    with pytest.raises(BankError, match="row 1"):
        parse_signals(b"signal_type,signal\npdq,not-hex\n", "bad.csv")


def test_banks_are_versioned_per_bank_with_one_category(tmp_path):
    banks = HashBanks(BankConfig(tmp_path))
    b1 = banks.add("ncmec-sample", "csam", parse_signals(f"{A}\n".encode()))
    b2 = banks.add("ncmec-sample", "csam", parse_signals(f"{A}\n{B}\n".encode()))  # A again: not duplicated
    assert (b1.version, len(b1.signals), b2.version, len(b2.signals)) == (1, 1, 2, 2)
    assert [(b.bank_id, b.category, b.version) for b in HashBanks(BankConfig(tmp_path)).banks()] == [
        ("ncmec-sample", "csam", 2)]
    with pytest.raises(BankError, match="category"):
        banks.add("ncmec-sample", "extremism", [])
    with pytest.raises(BankError, match="bank id"):
        banks.add("../escape", "csam", [])


def test_hash_matching_is_within_the_pdq_distance(tmp_path):
    banks = HashBanks(BankConfig(tmp_path))
    banks.add("b", "extremism", parse_signals(f"{A}\n".encode()))
    near = _flip(A, 14)  # 28 bits away
    far = _flip(A, 18)  # 36 bits away
    assert [(m.bank_id, m.distance) for m in banks.match_hashes([near])] == [("b", 28)]
    assert banks.match_hashes([far]) == []


def test_a_banked_image_matches_after_jpeg_and_crops_and_others_do_not(tmp_path, banked):
    banks = HashBanks(BankConfig(tmp_path))
    banks.add("known-bad", "csam", image_signals(np.asarray(banked), "astronaut.png"))
    for name, im in edits(banked).items():
        (m,) = banks.match_image(np.asarray(im))
        assert m.bank_id == "known-bad" and m.distance <= 31, name
    for other in (data.coffee(), data.chelsea(), data.rocket()):
        assert banks.match_image(other) == []


def test_banks_added_while_running_are_seen_without_a_restart(tmp_path, banked):
    reader = HashBanks(BankConfig(tmp_path))
    assert reader.match_image(np.asarray(banked)) == []
    HashBanks(BankConfig(tmp_path)).add("late", "ncii", [image_signals(np.asarray(banked), "a.png")[0]])
    assert [m.bank_id for m in reader.match_image(np.asarray(banked))] == ["late"]


@pytest.fixture(scope="module")
def gate(tmp_path_factory, banked) -> LayeredImageGate:
    directory = tmp_path_factory.mktemp("banks")
    HashBanks(BankConfig(directory)).add("known-bad", "csam", image_signals(np.asarray(banked), "astronaut.png"))
    g = LayeredImageGate(load_pack(), ImageChecksConfig(threads=1, banks=str(directory)))
    g.load()
    return g


def test_the_image_gate_blocks_a_bank_match_with_the_bank_id(gate, banked):
    images = list(edits(banked).values()) + [Image.fromarray(data.coffee())]
    verdicts = gate.screen(images)
    for v in verdicts[:-1]:
        assert v.decision == Decision.BLOCK and v.stage == "hashbank" and v.categories == ("csam", "hash_bank")
        assert v.reasons[0].startswith("bank=known-bad version=1 category=csam distance=")
    assert verdicts[-1].stage != "hashbank"


def test_the_shipped_pack_names_a_bank_directory_beside_it():
    pack = load_pack()
    assert pack.image.banks and pack.image.banks.endswith("banks")


def test_banks_cli_add_list_match(tmp_path, banked, capsys):
    img = tmp_path / "bad.png"
    banked.save(img)
    copy = tmp_path / "copy.jpg"
    _jpeg(_crop(banked, .05, .05, .05, .05)).save(copy)
    signals = tmp_path / "export.csv"
    signals.write_text(f"signal_type,signal\npdq,{B}\n")
    d = str(tmp_path / "banks")
    assert main(["safety", "banks", "add", "shared", "--category", "extremism", "--signals", str(signals), "--dir", d]) == 0
    assert main(["safety", "banks", "add", "ours", "--category", "csam", "--image", str(img), "--dir", d]) == 0
    assert main(["safety", "banks", "list", "--dir", d]) == 0
    out = capsys.readouterr().out
    assert "ours\tcsam\tv1\t13 signals" in out and "shared\textremism\tv1\t1 signals" in out
    assert main(["safety", "banks", "match", "--dir", d, "--hash", B, "--", str(copy), str(img)]) == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert [ln["blocked"] for ln in lines] == [True, True, True]
    assert lines[0]["matches"][0]["bank"] == "shared" and lines[1]["matches"][0]["bank"] == "ours"
    assert pdq(np.asarray(banked)).value  # the one PDQ implementation (provenance.fingerprint)


def _flat(shade: int, side: int) -> np.ndarray:
    return np.full((side, side, 3), shade, np.uint8)


def test_a_flat_image_is_not_banked_and_why(tmp_path):
    # A flat image's PDQ comes from rounding, not content: every blank output of that shade, at any size, shares it.
    assert pdq(_flat(120, 256)).value == pdq(_flat(120, 640)).value and pdq(_flat(120, 256)).quality < 50
    with pytest.raises(BankError, match="quality 0 is below 50"):
        image_signals(_flat(120, 256), "blank.png")
    # with the rule overridden, the bank itself still refuses the hash (its bits give it away; so for hash imports)
    assert flat_hash(pdq(_flat(120, 256)).value) and not flat_hash(pdq(np.asarray(data.astronaut())).value)
    with pytest.raises(BankError, match="flat-image hash"):
        HashBanks(BankConfig(tmp_path)).add("forced", "csam", image_signals(_flat(120, 256), "blank.png", 0))


def test_views_below_the_quality_rule_are_dropped(banked):
    rgb = np.full_like(np.asarray(banked), 128)
    rgb[:, :40] = np.asarray(banked)[:, :40]  # content only in a strip on the left: crops without it are flat
    views = {s.view for s in image_signals(rgb, "strip.png")}
    assert pdq(rgb).quality >= 50 and "original" in views
    assert {"crop10r", "crop10tl"} <= views and not {"crop10l", "crop25", "crop10tr"} & views  # 0 = flat


def test_a_dimmed_copy_of_a_banked_image_still_matches(tmp_path, banked):
    # Dimming keeps PDQ's bits (each is a coefficient against the median) but drops its quality below 50: a gate
    # that skipped low-quality queries would let a dimmed copy of known-bad content through.
    banks = HashBanks(BankConfig(tmp_path))
    banks.add("known-bad", "csam", image_signals(np.asarray(banked), "astronaut.png"))
    for scale in (0.08, 0.04):
        dim = (np.asarray(banked).astype(np.float32) * scale).astype(np.uint8)
        assert pdq(dim).quality < 50
        assert [m.bank_id for m in banks.match_image(dim)] == ["known-bad"]


def test_banks_cli_refuses_a_flat_image_with_a_reason(tmp_path, capsys):
    flat = tmp_path / "blank.png"
    Image.fromarray(_flat(200, 128)).save(flat)
    d = str(tmp_path / "banks")
    assert main(["safety", "banks", "add", "x", "--category", "csam", "--image", str(flat), "--dir", d]) != 0
    assert "PDQ quality 0 is below 50" in capsys.readouterr().err
    assert main(["safety", "banks", "add", "x", "--category", "csam", "--image", str(flat), "--dir", d,
                 "--min-quality", "101"]) != 0
    assert "0 to 100" in capsys.readouterr().err


def _framed(rgb: np.ndarray, frame: str) -> np.ndarray:
    h, w = rgb.shape[:2]
    p = h // 20  # 5 %
    if frame == "dim-black":  # dimmed to quality < 50, then framed in black: the frame test must use its contrast
        return np.pad((rgb.astype(np.float32) * 0.04).astype(np.uint8), ((p, p), (p, p), (0, 0)))
    pads = {"white": (((p, p), (p, p), (0, 0)), 255), "right-bar": (((0, 0), (0, 4 * p), (0, 0)), 0),
            "letterbox": (((2 * p, 2 * p), (0, 0), (0, 0)), 30),
            "wide-bar": (((0, 0), (0, w * 3 // 2), (0, 0)), 0),  # a bar wider than the picture
            "corner-of-canvas": (((0, h), (0, w), (0, 0)), 255)}[frame]  # the picture in one corner of a blank canvas
    return np.pad(rgb, pads[0], constant_values=pads[1])


@pytest.mark.parametrize("frame", ["white", "right-bar", "letterbox", "wide-bar", "corner-of-canvas",
                                   "dim-black"])
def test_a_framed_copy_of_a_banked_image_is_blocked(gate, banked, frame):
    # Padding moves PDQ 60-110 bits (past the match distance on its own); the gate also hashes the content inside a
    # uniform frame. JPEG q75 after framing, and a mirror, as a re-share would.
    copy = _jpeg(Image.fromarray(_framed(np.asarray(banked), frame)).transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    assert min(distance(v.value, pdq(np.asarray(banked)).value) for v in pdq_dihedral(np.asarray(copy))) > 31
    (v,) = gate.screen([copy])
    assert v.decision == Decision.BLOCK and v.stage == "hashbank" and v.reasons[0].startswith("bank=known-bad ")
    other = _jpeg(Image.fromarray(_framed(data.coffee(), frame)))
    assert gate.screen([other])[0].stage != "hashbank"


def test_a_banked_image_with_bars_matches_its_unframed_copy(tmp_path, banked):
    banks = HashBanks(BankConfig(tmp_path))
    signals = image_signals(_framed(np.asarray(banked), "letterbox"), "letterboxed.png")
    assert "trimmed" in {s.view for s in signals}
    banks.add("known-bad", "csam", signals)
    for name, im in edits(banked).items():  # the bars removed, then cropped or re-encoded
        assert [m.bank_id for m in banks.match_image(np.asarray(im))] == ["known-bad"], name


def test_a_milder_bank_full_of_near_duplicates_cannot_hide_a_csam_match(tmp_path, banked):
    rgb = np.asarray(banked)
    banks = HashBanks(BankConfig(tmp_path))
    banks.add("adult", "sexual", image_signals(rgb, "a.png"))
    own = pdq(rgb).value
    flips = [f"{int(own, 16) ^ (1 << b):064x}" for b in range(12)]  # a dozen hashes 1 bit away
    banks.add("adult", "sexual", [Signal(v, "dup") for v in flips])
    far = f"{int(own, 16) ^ ((1 << 20) - 1):064x}"  # 20 bits away
    banks.add("csam-main", "csam", [Signal(far, "ncmec")])
    matches = banks.match_image(rgb)
    assert [(m.bank_id, m.category) for m in matches] == [("csam-main", "csam"), ("adult", "sexual")]
    assert matches[0].distance == 20 and matches[1].distance == 0
    v = bank_verdict(load_pack().for_region("default"), matches)
    assert v.categories == ("csam", "hash_bank") and len(v.reasons) == 2


@pytest.mark.parametrize("content, problem", [
    ({"bank_id": "csam-main", "category": "csam", "version": 0, "signals": []}, "a bank lives only in"),  # a backup
    ({"bank_id": "zz-copy", "category": "CSAM", "version": 1, "signals": []}, "category 'CSAM'"),
    ({"bank_id": "zz-copy", "category": "csam", "version": 1, "signals": [{"value": "xyz"}]}, "signal 0"),
    ("{not json", "JSONDecodeError"),
])
def test_a_bad_bank_file_fails_closed_and_says_which(tmp_path, banked, content, problem):
    rgb = np.asarray(banked)
    banks = HashBanks(BankConfig(tmp_path))
    banks.add("csam-main", "csam", image_signals(rgb, "a.png"))
    (tmp_path / "zz-copy.json").write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(BankError, match=problem):
        banks.match_image(rgb)
    gate = FailClosed(LayeredImageGate(load_pack(), ImageChecksConfig(threads=1, banks=str(tmp_path))),
                      Deadline(base_s=60), echo_errors=True)
    (v,) = gate.screen([banked])
    assert v.decision == Decision.REVIEW and v.stage == "error" and "zz-copy.json" in v.reasons[0]
    (tmp_path / "zz-copy.json").unlink()
    assert [m.bank_id for m in banks.match_image(rgb)] == ["csam-main"]  # fixed: matching resumes


def _add_one(directory: str, n: int) -> None:
    HashBanks(BankConfig(Path(directory))).add("shared", "csam", [Signal(f"{int(A, 16) ^ n ^ (n << 128):064x}", f"p{n}")])


def test_concurrent_adds_from_several_processes_keep_every_signal(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_one, args=(str(tmp_path), n)) for n in range(1, 7)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 6
    (bank,) = HashBanks(BankConfig(tmp_path)).banks()
    assert bank.version == 6 and sorted(s.source for s in bank.signals) == [f"p{n}" for n in range(1, 7)]
    assert not list(tmp_path.glob("*.tmp"))


def test_banks_cli_skips_flat_image_hashes_in_an_export_and_says_so(tmp_path, capsys):
    export = tmp_path / "export.csv"
    export.write_text(f"signal_type,signal,id\npdq,{'0' * 64},te-flat\npdq,{B},te-good\n")
    d = str(tmp_path / "banks")
    assert main(["safety", "banks", "add", "shared", "--category", "csam", "--signals", str(export), "--dir", d]) == 0
    assert "skipped 1 flat-image hash(es)" in capsys.readouterr().err
    (bank,) = HashBanks(BankConfig(Path(d))).banks()
    assert [s.source for s in bank.signals] == ["te-good"]


@pytest.mark.parametrize("text, found", [
    (f"{B},te-7\n", [(B, "te-7")]),  # headerless, value first
    (json.dumps([B]), [(B, "x:1")]),  # a JSON list of strings
])
def test_more_export_layouts_import(text, found):
    assert [(s.value, s.source) for s in parse_signals(text.encode(), "x")] == found


@pytest.mark.parametrize("data, problem", [
    (b"id,checksum\n7,abc\n", "no PDQ signal"),  # columns we do not know: an error, not 0 signals
    (b'{"signals": null}', "not a signal export"),
    (b'[{"signal_value": "' + B.encode() + b'"', "not a signal export"),  # truncated
    (b"\xff\xfe\x00garbage", "not a signal export"),
    (b"[1, 2]", "row 1: expected an object"),
])
def test_an_export_that_does_not_parse_is_a_clear_error(data, problem):
    with pytest.raises(BankError, match=problem):
        parse_signals(data, "export.json")


def test_banks_cli_errors_are_messages_not_tracebacks(tmp_path, capsys):
    d = tmp_path / "banks"
    assert main(["safety", "banks", "match", "--dir", str(d), "--hash", "xyz"]) != 0
    assert "64 hex digits" in capsys.readouterr().err
    d.mkdir()
    (d / "broken.json").write_text("{")
    assert main(["safety", "banks", "list", "--dir", str(d)]) != 0
    assert "broken.json" in capsys.readouterr().err


def test_a_missing_bank_directory_is_logged(tmp_path, caplog):
    banks = HashBanks(BankConfig(tmp_path / "typo"))
    assert banks.match_image(np.asarray(data.coffee())) == []
    assert "does not exist: no bank is checked" in caplog.text


def test_matching_goes_on_with_the_loaded_banks_while_another_caller_reloads(tmp_path, banked):
    import threading

    rgb = np.asarray(banked)
    banks = HashBanks(BankConfig(tmp_path))
    banks.add("known-bad", "csam", image_signals(rgb, "a.png"))
    HashBanks(BankConfig(tmp_path)).add("other", "ncii", [Signal(B, "x")])  # a change this instance has not loaded
    with banks._reload:  # as if another thread were loading a large bank right now
        result: list = []
        t = threading.Thread(target=lambda: result.append(banks.match_image(rgb)))
        t.start()
        t.join(10)
        assert not t.is_alive() and [m.bank_id for m in result[0]] == ["known-bad"]
    assert [b.bank_id for b in banks.banks()] == ["known-bad", "other"]  # and the next call loads the change
