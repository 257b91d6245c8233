"""Known-answer tests for the metrics: EER, APCER/BPCER, operating points, bootstrap, breakdowns."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest
from wakeguard.model.metrics import (
    MetricsError,
    bootstrap_ci,
    compute_eer,
    compute_metrics,
    det_curve,
    error_rates,
    metrics_from_scores,
    per_condition,
    read_scores,
    threshold_at_bpcer,
    write_metrics,
    write_scores,
)


def asvspoof_reference_eer(target: np.ndarray, nontarget: np.ndarray) -> float:
    """The ASVspoof challenge's reference EER (reject when score <= threshold), for continuous scores."""
    n = target.size + nontarget.size
    scores = np.concatenate([target, nontarget])
    labels = np.concatenate([np.ones(target.size), np.zeros(nontarget.size)])
    order = np.argsort(scores, kind="mergesort")
    labels = labels[order]
    tar_sums = np.cumsum(labels)
    non_sums = nontarget.size - (np.arange(1, n + 1) - tar_sums)
    frr = np.concatenate([[0], tar_sums / target.size])
    far = np.concatenate([[1], non_sums / nontarget.size])
    i = np.argmin(np.abs(frr - far))
    return float((frr[i] + far[i]) / 2)


def test_eer_hand_computed():
    # t=3: bona fide 1,2 rejected (BPCER 2/5); spoof 6 accepted (APCER 1/3); |diff| 1/15 is the least.
    eer, thr = compute_eer([1, 2, 3, 4, 5], [0, 2.5, 6])
    assert eer == pytest.approx((2 / 5 + 1 / 3) / 2)
    assert thr == 3.0


def test_eer_perfect_separation_and_inversion():
    eer, thr = compute_eer([2.0, 3.0, 4.0], [-1.0, 0.0, 1.0])
    assert eer == 0.0
    assert thr == 2.0  # the lowest threshold that rejects every spoof and no bona fide
    assert error_rates([2.0, 3.0, 4.0], [-1.0, 0.0, 1.0], thr) == (0.0, 0.0)
    assert compute_eer([0.0, 1.0], [2.0, 3.0])[0] == 1.0


def test_eer_ties_are_never_split():
    assert compute_eer([1.0, 1.0], [1.0, 1.0])[0] == 0.5
    assert compute_eer(np.zeros(10), np.zeros(30))[0] == 0.5
    # t=1 gives (APCER .5, BPCER 0), t=2 gives (0, .5): equal gaps, the lower threshold wins.
    eer, thr = compute_eer([1.0, 2.0], [1.0, 0.0])
    assert (eer, thr) == (0.25, 1.0)


def test_eer_matches_asvspoof_reference_on_continuous_scores():
    rng = np.random.default_rng(3)
    for _ in range(20):
        b = rng.normal(1.0, 1.0, rng.integers(5, 300))
        s = rng.normal(-0.5, 1.3, rng.integers(5, 300))
        assert compute_eer(b, s)[0] == pytest.approx(asvspoof_reference_eer(b, s), abs=1e-12)


def test_apcer_at_bpcer():
    bona = np.arange(100, dtype=float)  # BPCER(t) = (#bona fide below t) / 100
    spoof = np.array([-5.0, 0.5, 1.5, 50.0])
    thr, apcer, bpcer = threshold_at_bpcer(bona, spoof, 0.01)
    assert thr == 1.0 and bpcer == 0.01  # t=1.5 would reject bona fide 0 and 1 (2 %)
    assert apcer == 0.5  # 1.5 and 50 still accepted
    thr5, apcer5, bpcer5 = threshold_at_bpcer(bona, spoof, 0.05)
    assert thr5 == 5.0 and bpcer5 == 0.05 and apcer5 == 0.25
    assert error_rates(bona, spoof, thr5) == (0.25, 0.05)


def test_det_curve_runs_from_accept_all_to_reject_all():
    d = det_curve([1, 2, 3], [0, 1.5])
    assert d["apcer"][0] == 1.0 and d["bpcer"][0] == 0.0
    assert d["apcer"][-1] == 0.0 and d["bpcer"][-1] == 1.0
    assert np.all(np.diff(d["bpcer"]) >= 0) and np.all(np.diff(d["apcer"]) <= 0)
    assert np.all(np.isfinite(d["apcer_probit"]))


def test_missing_class_is_an_error():
    with pytest.raises(MetricsError, match="both classes"):
        compute_eer([1.0, 2.0], [])


def _rows(rng, n_speakers=20, per_class=10, speaker_sd=1.5):
    rows = []
    for k in range(n_speakers):
        shift = rng.normal(0, speaker_sd)  # a speaker effect shared by all their trials
        for j in range(per_class):
            rows.append(
                {
                    "label": "bonafide",
                    "speaker": f"s{k}",
                    "score": 1.0 + shift + rng.normal(0, 0.3),
                    "attack": "-",
                }
            )
            rows.append(
                {
                    "label": "spoof",
                    "speaker": f"s{k}",
                    "score": -1.0 + shift + rng.normal(0, 0.3),
                    "attack": "AB"[j % 2],
                }
            )
    return rows


def test_bootstrap_resamples_speakers_and_is_seeded():
    rows = _rows(np.random.default_rng(0))
    a = bootstrap_ci(rows, threshold=0.0, n_boot=300, seed=1)
    b = bootstrap_ci(rows, threshold=0.0, n_boot=300, seed=1)
    assert a == b and a["unit"] == "speaker" and a["n_units"] == 20
    eer = compute_eer(
        [r["score"] for r in rows if r["label"] == "bonafide"],
        [r["score"] for r in rows if r["label"] == "spoof"],
    )[0]
    assert a["eer"][0] <= eer <= a["eer"][1]
    # Trials of one speaker are correlated: treating them as independent understates the spread.
    no_spk = [{**r, "speaker": ""} for r in rows]
    t = bootstrap_ci(no_spk, threshold=0.0, n_boot=300, seed=1)
    assert t["unit"] == "trial" and t["n_units"] == len(rows)
    assert (a["eer"][1] - a["eer"][0]) > 1.5 * (t["eer"][1] - t["eer"][0])


def test_one_speaker_is_resampled_by_trial_not_given_a_zero_width_interval():
    rng = np.random.default_rng(0)
    rows = [
        {"speaker": "s0", "label": label, "score": float(rng.normal(mu, 1.0))}
        for label, mu in (("bonafide", 0.5), ("spoof", -0.5))
        for _ in range(40)
    ]
    ci = bootstrap_ci(rows, threshold=0.0, n_boot=300, seed=1)
    assert ci["unit"] == "trial" and ci["n_units"] == len(rows)
    assert ci["fallback"] == "one speaker: resampled by trial, not by speaker"
    assert ci["eer"][1] > ci["eer"][0]
    assert "fallback" not in bootstrap_ci(_rows(np.random.default_rng(0)), threshold=0.0, n_boot=50)


def test_crossed_bootstrap_also_resamples_rooms():
    """Trials of one room share its acoustics: when rooms differ in difficulty, an interval
    that resamples only speakers is too narrow, and the crossed one widens it."""
    rng = np.random.default_rng(3)
    rows = []
    for spk in range(30):
        for room in range(6):
            hard = room == 0  # one room where live and replayed speech overlap
            for label, mu in (("bonafide", 1.0), ("spoof", -1.0)):
                mu = 0.1 * mu if hard else 2.5 * mu
                rows.append(
                    {
                        "speaker": f"s{spk}",
                        "room": f"r{room}",
                        "label": label,
                        "score": float(rng.normal(mu, 0.5)),
                    }
                )
    spk = bootstrap_ci(rows, threshold=0.0, n_boot=400, seed=2)
    both = bootstrap_ci(rows, threshold=0.0, n_boot=400, seed=2, crossed_with="room")
    assert both["unit"] == "speaker x room" and both["n_units_room"] == 6
    assert both["n_units"] == 30
    assert (both["eer"][1] - both["eer"][0]) > 3 * (spk["eer"][1] - spk["eer"][0])
    # drawing the hard room twice or not at all moves the EER by points
    assert both["eer"][0] < 0.03 and both["eer"][1] > 0.12
    m = compute_metrics(rows, threshold=0.0, n_boot=100)
    assert m["ci_rooms"]["unit"] == "speaker x room"
    assert compute_metrics([{**r, "room": "-"} for r in rows], n_boot=50)["ci_rooms"] is None


def test_per_condition_rule():
    rows = [
        {"label": "bonafide", "score": s, "attack": "-", "room": r}
        for s, r in [(1.0, "small"), (2.0, "small"), (3.0, "large"), (4.0, "large")]
    ] + [
        {"label": "spoof", "score": s, "attack": a, "room": r}
        for s, a, r in [
            (0.0, "A", "small"),
            (0.5, "A", "large"),
            (2.5, "B", "small"),
            (3.5, "B", "large"),
        ]
    ]
    pc = per_condition(rows, ["attack", "room"])
    # attack: bona fide rows hold '-', so each attack is scored against all four bona fide rows.
    assert pc["attack"]["A"] == {"eer": 0.0, "n_bonafide": 4, "n_spoof": 2, "bonafide": "all"}
    assert pc["attack"]["B"]["eer"] == pytest.approx(compute_eer([1, 2, 3, 4], [2.5, 3.5])[0])
    assert "-" not in pc["attack"]
    # room applies to live speech too: same-room bona fide only.
    assert pc["room"]["small"]["n_bonafide"] == 2
    assert pc["room"]["small"]["eer"] == pytest.approx(compute_eer([1, 2], [0.0, 2.5])[0])


def test_per_condition_values_come_in_numeric_order():
    """Reports and JSON list ranges as a reader counts: 8-15 dB before 15-25 dB, and a
    closing open range (>100cm) last."""
    values = ["100-150cm", ">100cm", "10-50cm", "50-100cm", "15-25", "8-15", "room10", "room2"]
    rows = [
        {"label": lab, "score": float(i), "d": v}
        for i, v in enumerate(values)
        for lab in ("bonafide", "spoof")
    ]
    expected = "8-15 10-50cm 15-25 50-100cm 100-150cm >100cm room2 room10".split()
    assert list(per_condition(rows, ["d"])["d"]) == expected


def test_metrics_from_score_csv_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    rows = [
        {**r, "path": f"a/{i}.wav", "split": "eval" if i % 4 else "dev"}
        for i, r in enumerate(_rows(rng))
    ]
    path = write_scores(tmp_path / "scores.csv", rows, ["attack"])
    table = read_scores(path)
    assert table.condition_columns == ["attack"] and len(table.rows) == len(rows)
    m = metrics_from_scores(path, threshold=0.0, split="eval", n_boot=200)
    json.dumps(m)  # JSON-serialisable as written
    ev = [r for r in rows if r["split"] == "eval"]
    b = [r["score"] for r in ev if r["label"] == "bonafide"]
    s = [r["score"] for r in ev if r["label"] == "spoof"]
    assert m["eer"] == pytest.approx(compute_eer(b, s)[0])
    assert (m["apcer"], m["bpcer"]) == pytest.approx(error_rates(b, s, 0.0))
    assert m["n_bonafide"] == len(b) and m["n_spoof"] == len(s)
    assert m["threshold_source"] == "given" and m["ci"]["unit"] == "speaker"
    assert set(m["per_condition"]["attack"]) == {"A", "B"}
    # Without a threshold the EER threshold of these scores is used, and said so.
    m2 = metrics_from_scores(path, split="eval", n_boot=50)
    assert m2["threshold"] == m2["eer_threshold"] and m2["threshold_source"] == "these scores"
    assert compute_metrics(ev, ["attack"], threshold=0.0, n_boot=200)["eer"] == m["eer"]


def test_bad_score_file_names_line(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text(
        "path,label,speaker,split,score\na.wav,bonafide,s1,eval,0.5\nb.wav,spoof,s1,eval,oops\n"
    )
    with pytest.raises(MetricsError, match=r"s.csv:3"):
        read_scores(p)


def test_score_file_encoding_bom_and_duplicates(tmp_path):
    """A Latin-1 or binary file names itself and its line; Excel's "CSV UTF-8" (with a
    byte-order mark) reads; a second score for one path is an error, not a silent overwrite."""
    good = "path,label,score\na.wav,bonafide,0.5\nb.wav,spoof,-0.5\n"
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + good.encode())
    table = read_scores(bom, require=("path",))
    assert [r["path"] for r in table.rows] == ["a.wav", "b.wav"]
    latin = tmp_path / "latin.csv"
    latin.write_bytes(good.encode() + "caf\xe9.wav,spoof,0.1\n".encode("latin-1"))
    with pytest.raises(MetricsError, match=r"latin.csv:4: not a UTF-8 text CSV \(byte 0xe9\)"):
        read_scores(latin)
    dup = tmp_path / "dup.csv"
    dup.write_text(good + "a.wav,bonafide,-3.0\n")
    with pytest.raises(
        MetricsError, match=r"dup.csv:4: path a.wav is scored twice \(first on line 2\)"
    ):
        read_scores(dup)
    no_path = tmp_path / "no_path.csv"
    no_path.write_text("label,score\nbonafide,0.5\nbonafide,0.7\n")
    assert len(read_scores(no_path).rows) == 2  # no path column: nothing to repeat
    with pytest.raises(MetricsError, match=r"no_path.csv: no 'path' column; header is"):
        read_scores(no_path, require=("path",))


class _FullDisk:
    """A cell value whose writing fails as a full disk does, half-way through the file."""

    def __str__(self) -> str:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_writes_are_atomic_and_failures_name_the_file(tmp_path):
    """A failed write leaves the old file as it was and no ``.part`` behind, and the error
    says which file and why ("No space left on device" alone names neither)."""
    rows = [{"path": "a.wav", "label": "bonafide", "score": 0.5, "attack": "-"}]
    path = write_scores(tmp_path / "scores.csv", rows, ["attack"])
    before = path.read_bytes()
    broken = [*rows, {"path": "b.wav", "label": "spoof", "score": -0.5, "attack": _FullDisk()}]
    with pytest.raises(OSError, match=r"cannot write .*scores.csv: No space left on device"):
        write_scores(path, broken, ["attack"])
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "scores.csv"
    ]
    # An unwritable target: a folder where metrics.json should go.
    (tmp_path / "metrics.json").mkdir()
    with pytest.raises(OSError, match=r"cannot write .*metrics.json: Is a directory"):
        write_metrics(tmp_path / "metrics.json", {"eer": 0.1})
    assert not list(tmp_path.glob("*.part*"))
    assert json.loads(write_metrics(tmp_path / "m.json", {"eer": 0.1}).read_text()) == {"eer": 0.1}


def test_identifier_columns_are_not_broken_down():
    rows = [
        {
            "label": "bonafide" if i % 2 else "spoof",
            "score": float(i % 7),
            "src": f"file{i}",
            "attack": "-" if i % 2 else "A",
        }
        for i in range(400)
    ]
    m = compute_metrics(rows, ["src", "attack"], threshold=0.0, n_boot=10)
    assert m["per_condition"]["src"] == {} and m["per_condition_skipped"] == {"src": 400}
    assert set(m["per_condition"]["attack"]) == {"A"}
