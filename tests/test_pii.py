"""Personal data kept out (issue 16, item 7): the offline recognisers find what they should and leave look-alikes
alone, counts per column reach the data-quality findings, and a planted email and card number appear in no file a
drift check and a report run leave behind (workspace, W&B run, report folder), unless redaction is turned off."""
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fmops_nb.errors import NotFoundError
from fmops_nb.pii import count_values, redact, redact_all, scan, scan_columns

FOUND = [  # (text, kinds found in order)
    ("write to jane.doe+tickets@mail.example.co.uk today", ["email"]),
    ("Visa 4111 1111 1111 1111, Mastercard 5555-5555-5555-4444, Amex 378282246310005", ["card", "card", "card"]),
    ("IBAN GB82 WEST 1234 5698 7654 32 and DE89370400440532013000.", ["iban", "iban"]),
    ("call +1 (415) 555-0100 or 020 7946 0958 or 0044 20 7946 0958", ["phone", "phone", "phone"]),
    ("from 192.168.10.254 and fe80::1ff:fe23:4567:890a", ["ip", "ip"]),
    ("SSN 078-05-1120; NINO AB 12 34 56 C", ["national_id", "national_id"]),
]
NOT_FOUND = [
    "order 4111111111111112 (fails Luhn), account 12345678, ticket #5551234",
    "released 2024-01-31, 31.01.2024 at 12:30:45 by v1.2.3",
    "IBAN-like DE89 3704 0044 0532 0130 01 (bad check digits), build 10.0.19045.2965, 999.1.1.1",
    "user@localhost, @handle, a:b:c, 0000 0000 0000 0000",
    "[-0.43686834  0.51984173 -0.74234445  0.35145506], scores 0.51 0.23 0.45 0.66, 3.14159265358979",
]


@pytest.mark.parametrize("text, kinds", FOUND)
def test_the_recognisers_find_each_kind(text, kinds):
    assert [f.kind for f in scan(text)] == kinds
    red = redact(text)
    for f in scan(text):
        assert f.text not in red and f"[{f.kind.upper()}]" in red


@pytest.mark.parametrize("text", NOT_FOUND)
def test_look_alikes_are_left_alone(text):
    assert scan(text) == [] and redact(text) == text


def test_vectors_printed_as_text_are_not_personal_data():
    "A probe's inputs are often numbers printed as text: rows of them look like cards and phones piece by piece."
    import numpy as np
    rng = np.random.default_rng(1)
    rows = [str(x) for _ in range(200) for x in (rng.normal(size=8), rng.integers(0, 10**4, size=8),
                                                 rng.integers(0, 10**6, size=6), rng.random(5) * 100)]
    assert sum(bool(scan(r)) for r in rows) <= len(rows) // 100


def test_hostile_text_is_scanned_in_linear_time():
    for s in ("a" * 5000 + "@" + "b." * 5000, "1 " * 10000, "1-" * 10000, ":" * 20000, "+" + "(1)" * 5000):
        t = time.perf_counter()
        redact(s)
        assert time.perf_counter() - t < 1, s[:20]  # 20,000 characters


def test_counts_per_column_and_nested_redaction():
    df = pd.DataFrame({"note": ["mail a@b.io", "call +44 20 7946 0958", "ok", None] * 5,
                       "customer": pd.Categorical(["x@y.org", "plain"] * 10), "n": range(20)})
    assert scan_columns(df) == {"note": {"email": 5, "phone": 5}, "customer": {"email": 10}}
    assert count_values(["a@b.io", "a@b.io c@d.io"]) == {"email": 2}  # a value counts once per kind
    out = redact_all({"flipped": [{"input": "a@b.io", "a": 1, "b": 0}], "a@b.io": ("c@d.io",)})
    assert out == {"flipped": [{"input": "[EMAIL]", "a": 1, "b": 0}], "[EMAIL]": ("[EMAIL]",)}
    with pytest.raises(NotFoundError, match="email"):
        redact("a@b.io", kinds=["mail"])


EMAIL, CARD = "planted.person@example.com", "4111 1111 1111 1111"


def _planted(tmp_path: Path) -> tuple[Path, Path]:
    "A reference without personal data, and a current window with a planted email and card in a text and a category."
    n = 120
    ref = pd.DataFrame({"ticket": [f"printer {i % 7} is jammed again" for i in range(n)],
                        "customer": [f"cust-{i % 5}" for i in range(n)], "latency": [float(i % 11) for i in range(n)]})
    cur = ref.copy()
    cur.loc[:9, "ticket"] = f"refund to card {CARD} please, reach me at {EMAIL}"
    cur.loc[:19, "customer"] = EMAIL
    (tmp_path / "in").mkdir()
    ref.to_parquet(rp := tmp_path / "in" / "reference.parquet")
    cur.to_parquet(cp := tmp_path / "in" / "current.parquet")
    return rp, cp


def _leaks(root: Path, skip: Path) -> list[str]:
    "Files under `root` (outside `skip`) holding the planted email or card number, as bytes."
    needles = [EMAIL.encode(), CARD.encode(), CARD.replace(" ", "").encode(), EMAIL.encode("utf-16-le")]
    return [str(p) for p in root.rglob("*") if p.is_file() and skip not in p.parents
            and any(x in p.read_bytes() for x in needles)]


@pytest.mark.slow
def test_a_planted_email_and_card_appear_in_no_stored_file_or_html(tmp_path, isolated_workspace, capsys):
    from fmops_nb import reports
    from fmops_nb.core import Workspace
    from fmops_nb.drift import drift

    rp, cp = _planted(tmp_path)
    ws = Workspace.open()
    report = drift(rp, cp, embedder="hashing")
    pii = {q["column"]: q["counts"] for q in report.quality if q["check"] == "pii"}
    assert pii == {"ticket": {"card": 10, "email": 10}, "customer": {"email": 20}}
    html = report._repr_html_()
    assert "[EMAIL]" in html and EMAIL not in html and CARD not in html
    report.save(tmp_path / "out" / "drift.html")
    run = reports.run_report("drift_report", {"reference": str(rp), "current": str(cp), "embedder": "hashing"}, ws=ws)
    assert any(q["check"] == "pii" for q in run.values["quality"])
    assert "[EMAIL]" in (run.dir / "report.html").read_text()  # the examples are shown, redacted
    assert list((tmp_path / "wandb-env").rglob("*.wandb")) or list(ws.root.rglob("*.wandb"))  # the report's W&B run
    assert _leaks(tmp_path, skip=tmp_path / "in") == []
    # the opt-out is explicit and does what it says, in Python and on the command line
    kept = drift(rp, cp, embedder="hashing", redact=False)
    assert EMAIL in kept._repr_html_()
    from fmops_nb.cli import main
    main(["drift", str(rp), str(cp), "--embedder", "hashing"])
    out = capsys.readouterr().out
    assert "personal data" in out and EMAIL not in out
    main(["drift", str(rp), str(cp), "--embedder", "hashing", "--no-redact"])
    assert EMAIL in capsys.readouterr().out


def test_a_timeline_chunked_by_a_column_of_personal_data_shows_no_address():
    "Chunk labels come from the data too: a timeline by customer e-mail is redacted unless asked not to be."
    import json
    from fmops_nb.drift import drift
    rng = np.random.default_rng(0)
    ref = {"x": rng.normal(size=400)}
    cur = {"x": rng.normal(size=400), "who": np.array(["ana.lopez@example.com", "li@corp.example.org"] * 200)}
    kept = drift(ref, cur, chunk_by="who", redact=False)
    assert "ana.lopez@example.com" in json.dumps(kept.to_dict()) and len(kept.to_dict()["chunks"]) == 2
    shown = drift(ref, cur, chunk_by="who")
    text = json.dumps(shown.to_dict()) + shown._repr_html_()
    assert "ana.lopez@example.com" not in text and "li@corp.example.org" not in text
    assert [c["n"] for c in shown.to_dict()["chunks"]] == [200, 200]
