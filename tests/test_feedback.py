"""The feedback store (issue 16, item 1): records as a user would read them back, hostile input refused with nothing
written, whole-file imports, export round trips, fingerprints, schema migration, and two processes logging at once."""
import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fmops_nb import feedback
from fmops_nb.audit import check_log
from fmops_nb.core import Workspace
from fmops_nb.errors import FmopsError, NotFoundError, ValidationError, WorkspaceError


@pytest.fixture
def ws(isolated_workspace):
    return Workspace.open(isolated_workspace)


def stored(ws) -> tuple:
    "Every feedback row and audit row, read with a plain connection: what a failed call must leave unchanged."
    con = sqlite3.connect(f"{ws.db_path.as_uri()}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        fb = con.execute("SELECT * FROM feedback ORDER BY seq").fetchall() if "feedback" in tables else []
        audit = con.execute("SELECT * FROM audit ORDER BY seq").fetchall() if "audit" in tables else None
        return fb, audit
    finally:
        con.close()


def registered(ws, name="clf"):
    "A real registered version (safetensors weights), promoted to production."
    from safetensors.numpy import save_file
    from fmops_nb.registry import Registry
    p = ws.root.parent / f"{name}.safetensors"
    save_file({"w": np.arange(4, dtype=np.float32).reshape(2, 2)}, str(p))
    reg = Registry(ws, log=False)
    v = reg.register(name, p)
    reg.promote(v.id, to="production", reason="first")
    return reg, v


# ------------------------------------------------------------------------------------------ records
def test_each_kind_is_stored_and_read_back_as_logged(ws, monkeypatch):
    monkeypatch.setenv("FMOPS_USER", "dana")
    chat = [{"role": "user", "content": "Wie spät ist es? ⏰"}]
    before = datetime.now(timezone.utc)
    ids = [feedback.log("is this spam?", "spam", kind="label", value="ham", queue="triage", ws=ws),
           feedback.log(chat, "Es ist 3 Uhr.", kind="correction", value="Ich weiß es nicht.", queue="chat", ws=ws),
           feedback.log("summarise", "ok", kind="rating", value=8.5, scale=(0, 10), reviewer="Zoë", ws=ws),
           feedback.log({"age": 41, "income": 5.5e4}, 1, kind="thumbs", value=False, meta={"request": "r-1"}, ws=ws),
           feedback.log("q", None, kind="note", value="the input itself is ambiguous", ws=ws)]
    df = feedback.query(ws=ws)
    assert list(df["id"]) == ids and len(set(ids)) == 5
    assert list(df["kind"]) == ["label", "correction", "rating", "thumbs", "note"]
    assert list(df["value"]) == ["ham", "Ich weiß es nicht.", 8.5, "down", "the input itself is ambiguous"]
    assert df["input"][1] == chat and df["input"][3] == {"age": 41, "income": 55000.0}
    assert df["output"][3] == 1 and df["output"][4] is None
    assert df["scale"][2] == [0, 10] and df["scale"][0] is None
    assert list(df["reviewer"]) == ["dana", "dana", "Zoë", "dana", "dana"]
    assert list(df["queue"]) == ["triage", "chat", "default", "default", "default"]
    assert df["meta"][3] == {"request": "r-1"}
    assert str(df["at"].dt.tz) == "UTC" and all(before <= t <= datetime.now(timezone.utc) for t in df["at"])
    # the same input and output give the same item id; another output another one
    a = feedback.log("is this spam?", "spam", kind="thumbs", value="down", ws=ws)
    b = feedback.log("is this spam?", "ham", kind="thumbs", value="up", ws=ws)
    items = feedback.query(ws=ws).set_index("id")["item"]
    assert items[a] == items[ids[0]] != items[b]
    # the application's own id, text or an integer request id, for two reviewers of one item
    for who in ("r1", "r2"):
        feedback.log("same request", "out", kind="thumbs", value="up", item=41297, reviewer=who, ws=ws)
    assert list(feedback.query(item="41297", ws=ws)["reviewer"]) == ["r1", "r2"]


def test_query_filters_and_time_range(ws):
    t0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
    for i in range(6):
        feedback.log(f"x{i}", "y", kind="thumbs", value="up" if i % 2 else "down", queue="a" if i < 3 else "b",
                     reviewer="r1" if i % 3 else "r2", at=t0 + timedelta(hours=i), ws=ws)
    assert len(feedback.query(queue="a", ws=ws)) == 3
    assert len(feedback.query(queue=["a", "b"], reviewer="r2", ws=ws)) == 2
    rng = feedback.query(since=t0 + timedelta(hours=1), until="2026-11-01T15:00:00Z", ws=ws)
    assert list(rng["input"]) == ["x1", "x2"]  # since inclusive, until exclusive
    # given in another timezone, stored in UTC
    feedback.log("tz", "y", kind="note", value="n", at="2026-11-02T09:00:00+02:00", ws=ws)
    assert str(feedback.query(kind="note", ws=ws)["at"][0]) == "2026-11-02 07:00:00+00:00"
    empty = feedback.query(queue="nope", ws=ws)
    assert len(empty) == 0 and "value" in empty.columns
    with pytest.raises(ValidationError, match="no timezone"):
        feedback.query(since="2026-11-01T12:00:00", ws=ws)


def test_reading_an_untouched_workspace_creates_nothing(ws):
    assert len(feedback.query(ws=ws)) == 0
    assert ws.schema_version("feedback") == 0


# ------------------------------------------------------------------------------------------ hostile input
HOSTILE = [
    ("oversized input", dict(input="x" * (feedback.LIMITS["text_bytes"] + 1), kind="note", value="n"), "limit is"),
    ("oversized correction", dict(input="q", kind="correction", value="é" * 140_000), "limit is"),
    ("non-UTF-8 bytes", dict(input=b"caf\xe9", kind="note", value="n"), "not valid UTF-8"),
    ("lone surrogate (bytes decoded with surrogateescape)",
     dict(input=b"caf\xe9".decode("utf-8", "surrogateescape"), kind="note", value="n"), "lone surrogate"),
    ("NaN rating", dict(input="q", kind="rating", value=float("nan")), "finite"),
    ("numpy NaN rating", dict(input="q", kind="rating", value=np.float64("nan")), "finite"),
    ("infinite rating", dict(input="q", kind="rating", value=float("inf")), "finite"),
    ("rating off its scale", dict(input="q", kind="rating", value=6), "outside the scale 1..5"),
    ("a bool as a rating", dict(input="q", kind="rating", value=True), "must be a number"),
    ("an upside-down scale", dict(input="q", kind="rating", value=3, scale=(5, 1)), "rating scale"),
    ("unknown kind", dict(input="q", kind="stars", value=3), "Unknown feedback kind 'stars'"),
    ("thumbs sideways", dict(input="q", kind="thumbs", value="sideways"), "'up' or 'down'"),
    ("reviewer with a terminal escape", dict(input="q", kind="note", value="n", reviewer="eve\x1b[2J"), "control"),
    ("reviewer with a right-to-left override", dict(input="q", kind="note", value="n", reviewer="\u202eevol"),
     r"U\+202E"),
    ("reviewer with a newline", dict(input="q", kind="note", value="n", reviewer="a\nb"), "control"),
    ("empty reviewer", dict(input="q", kind="note", value="n", reviewer="  "), "empty"),
    ("NaN inside the input", dict(input={"x": float("nan")}, kind="note", value="n"), "not a number"),
    ("an object as output", dict(input="q", output=object(), kind="note", value="n"), "not JSON"),
    ("a path as the queue", dict(input="q", kind="note", value="n", queue="../etc"), "queue name"),
    ("a time without timezone", dict(input="q", kind="note", value="n", at="2026-12-01T10:00:00"), "no timezone"),
    ("meta that is not an object", dict(input="q", kind="note", value="n", meta=[1]), "meta must be a dict"),
    ("no input", dict(input=None, kind="note", value="n"), "input is missing"),
    ("a bare model name as version", dict(input="q", kind="note", value="n", version="clf"), "names no version"),
]


@pytest.mark.parametrize("what, kw, message", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_input_is_refused_clearly_and_nothing_is_written(ws, hostile, what, kw, message):
    hostile(what)
    feedback.log("a first record", "so the table exists", kind="note", value="n", ws=ws)
    before = stored(ws)
    with pytest.raises(ValidationError, match=message) as e:
        feedback.log(ws=ws, **kw)
    assert isinstance(e.value, FmopsError)
    assert stored(ws) == before


def test_an_unregistered_version_is_refused_and_an_alias_is_stored_as_its_version(ws):
    reg, v = registered(ws)
    before = stored(ws)
    with pytest.raises(NotFoundError, match="'clf:v9' is not registered"):
        feedback.log("q", "a", kind="thumbs", value="up", version="clf:v9", ws=ws)
    with pytest.raises(NotFoundError, match="not registered"):
        feedback.log("q", "a", kind="thumbs", value="up", version="other:production", ws=ws)
    assert stored(ws) == before
    feedback.log("q", "a", kind="thumbs", value="up", version="clf:production", ws=ws)
    v2 = reg.register("clf", ws.root.parent / "clf.safetensors", parent=v.id, tags=["again"])
    reg.promote(v2.id, to="production", reason="second")
    feedback.log("q", "b", kind="thumbs", value="down", version="clf:production", ws=ws)
    assert list(feedback.query(ws=ws)["version"]) == ["clf:v1", "clf:v2"]  # what the alias named when logged
    assert len(feedback.query(version="clf:v1", ws=ws)) == 1


def test_a_version_is_checked_in_a_workspace_with_no_registry(ws):
    with pytest.raises(NotFoundError, match="not registered"):
        feedback.log("q", "a", kind="thumbs", value="up", version="clf:v1", ws=ws)


# ------------------------------------------------------------------------------------------ batches and files
def test_log_many_is_all_or_nothing(ws):
    ok = {"input": "a", "kind": "note", "value": "fine"}
    b = feedback.log_many([ok, ok | {"kind": "rating", "value": 2}], defaults={"queue": "q1"}, ws=ws)
    assert b.rows == 2 and b.fingerprint == feedback.fingerprint(ws=ws)
    before = stored(ws)
    with pytest.raises(ValidationError, match="Record 3: The rating 11 is outside"):
        feedback.log_many([ok, ok, ok | {"kind": "rating", "value": 11}], ws=ws)
    with pytest.raises(ValidationError, match="Record 1: Unknown field 'reveiwer'. Did you mean 'reviewer'"):
        feedback.log_many([ok | {"reveiwer": "x"}], ws=ws)
    assert stored(ws) == before
    df = pd.DataFrame([{"input": "p", "output": "o", "kind": "thumbs", "value": "up"}] * 3)
    assert feedback.log_many(df, defaults={"queue": "frame"}, ws=ws).rows == 3


def jsonl(path: Path, rows: list, raw: dict | None = None) -> Path:
    "A JSON Lines file of `rows`; `raw` replaces given lines (1-based) with bytes."
    lines = [json.dumps(r).encode() for r in rows]
    for n, b in (raw or {}).items():
        lines[n - 1] = b
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


GOOD = [{"input": f"text {i}", "output": "pos", "kind": "label", "value": "neg", "reviewer": "ann",
         "queue": "drift-2026-12-01"} for i in range(5)]


@pytest.mark.parametrize("what, raw, message", [
    ("a rating out of range on line 4", {4: b'{"input": "x", "kind": "rating", "value": 0}'}, "Line 4 of .*outside"),
    ("a NaN rating on line 2", {2: b'{"input": "x", "kind": "rating", "value": NaN}'}, "Line 2 of .*finite"),
    ("latin-1 bytes on line 3", {3: b'{"input": "caf\xe9", "kind": "note", "value": "n"}'},
     "Line 3 of .*not valid UTF-8"),
    ("broken JSON on line 5", {5: b'{"input": "x", '}, "Line 5 of .*not valid JSON"),
    ("an unknown kind on line 1", {1: b'{"input": "x", "kind": "vibe", "value": 1}'}, "Line 1 of .*feedback kind"),
    ("a list, not an object, on line 2", {2: b'[1, 2]'}, "Line 2 of .*not an object"),
    ("a reviewer with an escape on line 3",
     {3: b'{"input": "x", "kind": "note", "value": "n", "reviewer": "\\u001b]0;"}'}, "Line 3 of .*control"),
])
def test_a_bad_line_is_named_and_nothing_of_the_file_is_written(ws, tmp_path, hostile, what, raw, message):
    hostile(what)
    feedback.log("earlier", "x", kind="note", value="n", ws=ws)
    before = stored(ws)
    with pytest.raises(ValidationError, match=message) as e:
        feedback.import_file(jsonl(tmp_path / "in.jsonl", GOOD, raw), ws=ws)
    assert "Nothing from the file was written" in str(e.value)
    assert stored(ws) == before


def test_an_import_naming_an_unregistered_version_writes_nothing(ws, tmp_path):
    registered(ws)
    rows = [r | {"version": "clf:v1"} for r in GOOD]
    rows[3]["version"] = "clf:v7"
    before = stored(ws)
    with pytest.raises(NotFoundError, match="Line 4 of .*clf:v7"):
        feedback.import_file(jsonl(tmp_path / "in.jsonl", rows), ws=ws)
    assert stored(ws) == before


def test_import_jsonl_and_a_users_parquet(ws, tmp_path):
    b = feedback.import_file(jsonl(tmp_path / "in.jsonl", GOOD), ws=ws)
    assert b.rows == 5 and b.path.endswith("in.jsonl")
    df = pd.DataFrame({"input": ["a", "b"], "output": ["x", "y"], "value": [4, 2],
                       "at": pd.to_datetime(["2026-12-01T10:00:00Z", "2026-12-01T11:00:00Z"], utc=True)})
    df.to_parquet(tmp_path / "ratings.parquet")
    b = feedback.import_file(tmp_path / "ratings.parquet", defaults={"kind": "rating", "queue": "survey"}, ws=ws)
    got = feedback.query(queue="survey", ws=ws)
    assert b.rows == 2 and list(got["value"]) == [4, 2] and list(got["input"]) == ["a", "b"]
    assert str(got["at"][1]) == "2026-12-01 11:00:00+00:00"
    df.assign(value=[4, 9]).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValidationError, match="Row 2 of .*outside"):
        feedback.import_file(tmp_path / "bad.parquet", defaults={"kind": "rating", "queue": "survey"}, ws=ws)
    (tmp_path / "x.csv").write_text("input\n")
    with pytest.raises(ValidationError, match=r"\.jsonl or \.parquet"):
        feedback.import_file(tmp_path / "x.csv", ws=ws)


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_export_imports_back_as_the_same_records_with_the_same_fingerprint(ws, tmp_path, suffix):
    feedback.log({"text": "ünïcode ✓", "n": [1, 2.5]}, {"label": 1}, kind="rating", value=3.5, scale=(1, 5),
                 reviewer="Zoë", meta={"k": None}, queue="q1", ws=ws)
    feedback.log("plain", None, kind="label", value=7, queue="q1", ws=ws)
    feedback.log("other queue", "o", kind="thumbs", value="up", queue="q2", ws=ws)
    out = feedback.export(tmp_path / f"q1.{suffix}", queue="q1", ws=ws)
    assert out.rows == 2 and out.fingerprint == feedback.fingerprint(queue="q1", ws=ws)
    other = Workspace.open(tmp_path / "other")
    back = feedback.import_file(out.path, ws=other)
    assert back.rows == 2 and back.fingerprint == out.fingerprint == feedback.fingerprint(ws=other)
    a, b = feedback.query(queue="q1", ws=ws), feedback.query(ws=other)
    assert a.drop(columns="at").to_dict("records") == b.drop(columns="at").to_dict("records")
    assert list(a["at"]) == list(b["at"])
    again = feedback.import_file(out.path, ws=other)  # importing twice writes nothing
    assert (again.rows, again.skipped) == (0, 2) and len(feedback.query(ws=other)) == 2


def test_an_id_names_one_judgement(ws, tmp_path):
    feedback.log_many([{"id": "fb-1", "input": "a", "kind": "note", "value": "first"}], ws=ws)
    before = stored(ws)
    with pytest.raises(ValidationError, match="different judgement with the id 'fb-1'"):
        feedback.import_file(jsonl(tmp_path / "x.jsonl", [GOOD[0], {"id": "fb-1", "input": "a", "kind": "note",
                                                                     "value": "changed"}]), ws=ws)
    assert stored(ws) == before


def test_export_is_atomic_and_refuses_unknown_formats(ws, tmp_path):
    feedback.log("a", "b", kind="note", value="n", ws=ws)
    with pytest.raises(ValidationError, match=r"\.jsonl or \.parquet"):
        feedback.export(tmp_path / "out.csv", ws=ws)
    with pytest.raises(ValidationError, match="Unknown filter 'queu'"):
        feedback.export(tmp_path / "out.jsonl", queu="x", ws=ws)
    assert not (tmp_path / "out.jsonl").exists()
    feedback.export(tmp_path / "out.jsonl", ws=ws)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []  # no temporary left behind


# ------------------------------------------------------------------------------------------ fingerprints
def test_the_fingerprint_depends_on_the_records_only(tmp_path):
    recs = [{"id": f"r{i}", "input": f"in {i}", "output": "o", "kind": "rating", "value": i % 5 + 1,
             "at": f"2026-12-01T0{i}:00:00Z", "reviewer": "ann"} for i in range(6)]
    w1, w2, w3 = (Workspace.open(tmp_path / n) for n in ("w1", "w2", "w3"))
    feedback.log_many(recs, ws=w1)
    for r in reversed(recs):  # another order, one call each
        feedback.log_many([r], ws=w2)
    assert feedback.fingerprint(ws=w1) == feedback.fingerprint(ws=w2) == feedback.query(ws=w2).attrs["fingerprint"]
    feedback.log_many(recs[:5] + [recs[5] | {"value": 3}], ws=w3)  # one rating differs
    assert feedback.fingerprint(ws=w3) != feedback.fingerprint(ws=w1)
    assert feedback.fingerprint(ws=w1, kind="rating", since="2026-12-01T03:00:00Z") != feedback.fingerprint(ws=w1)
    assert feedback.fingerprint(ws=w1).startswith("sha256:") and len(feedback.fingerprint(ws=w1)) == 71


def test_every_write_is_one_audit_row_and_the_log_stays_intact(ws, tmp_path):
    from fmops_nb.audit import audit_log
    from fmops_nb.registry import verify_audit
    registered(ws)
    feedback.log("q", "a", kind="thumbs", value="up", version="clf:v1", queue="app", ws=ws)
    b = feedback.import_file(jsonl(tmp_path / "in.jsonl", GOOD), ws=ws)
    rows = [r for r in audit_log(ws) if r["action"] == "feedback"]
    assert [r["subject"] for r in rows] == ["drift-2026-12-01", "app"]
    after = rows[0]["after"] if isinstance(rows[0]["after"], dict) else json.loads(rows[0]["after"])
    assert after["records"] == 5 and after["sha256"] == b.fingerprint and after["source"].endswith("in.jsonl")
    check = verify_audit(ws)
    assert check.ok, check.problems
    assert feedback.verify(ws) == []


@pytest.mark.parametrize("what, sql, found", [
    ("a rating edited", "UPDATE feedback SET value='5' WHERE seq=(SELECT MIN(seq) FROM feedback WHERE kind='rating')",
     "write .* stored 3 records; 3 carry its number now and their fingerprint differs"),
    ("a correction deleted", "DELETE FROM feedback WHERE kind='correction'",
     "stored 1 records; 0 carry its number now"),
    ("a row inserted with sqlite3", "INSERT INTO feedback (id, at, queue, kind, value, reviewer, item, input, batch) "
     "VALUES ('planted', '2026-12-01T00:00:00.000000Z', 'q', 'thumbs', '\"up\"', 'mallory', 'i', '\"x\"', 999)",
     r"1 records \(ids planted\) name write 999, which is not a feedback write"),
    ("a row moved into another write", "UPDATE feedback SET batch=(SELECT MAX(batch) FROM feedback) "
     "WHERE kind='correction'", "stored 1 records; 0 carry its number"),
])
def test_verify_finds_feedback_changed_behind_the_stores_back(ws, hostile, what, sql, found):
    hostile(what)
    feedback.log_many([{"input": f"q{i}", "kind": "rating", "value": 3} for i in range(3)], ws=ws)
    feedback.log("q", "a", kind="correction", value="b", ws=ws)
    feedback.log("q", "a", kind="thumbs", value="up", ws=ws)
    assert feedback.verify(ws) == []
    con = sqlite3.connect(ws.db_path)
    con.execute(sql)
    con.commit()
    con.close()
    problems = feedback.verify(ws)
    assert len(problems) >= 1 and any(re.search(found, p) for p in problems), problems


# ------------------------------------------------------------------------------------------ schema
def test_an_old_workspace_opens_and_migrates(ws):
    reg, v = registered(ws)  # a workspace from before the feedback store: registry and audit only
    assert ws.schema_version("feedback") == 0
    feedback.log("q", "a", kind="thumbs", value="up", version=v.id, ws=ws)
    assert ws.schema_version("feedback") == len(feedback._SCHEMA)
    assert [x.id for x in reg.versions()] == ["clf:v1"] and len(feedback.query(ws=ws)) == 1


def test_a_newer_schema_is_refused_clearly_and_left_alone(ws):
    feedback.log("q", "a", kind="note", value="n", ws=ws)
    with ws.transaction() as con:
        con.execute("UPDATE schema_versions SET version=99 WHERE component='feedback'")
    before = stored(ws)
    for call in (lambda: feedback.log("q", "a", kind="note", value="n", ws=ws), lambda: feedback.query(ws=ws),
                 lambda: feedback.fingerprint(ws=ws)):
        with pytest.raises(WorkspaceError, match="schema version 99, newer than this fmops_nb knows"):
            call()
    assert stored(ws) == before


# ------------------------------------------------------------------------------------------ concurrency
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from fmops_nb import feedback
    from fmops_nb.core import Workspace
    name, n, folder = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    ws = Workspace.open()
    (folder / f"ready-{name}").touch()
    while not (folder / "go").exists(): time.sleep(0.005)
    for i in range(n):
        feedback.log(f"{name} item {i}", "out", kind="rating", value=i % 5 + 1, reviewer=name, queue="race", ws=ws)
    print("done", name)
""")


def test_two_processes_logging_at_once_lose_nothing(ws, tmp_path):
    feedback.log("x", "y", kind="note", value="tables exist before the race", ws=ws)
    n = 60
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, name, str(n), str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=os.environ.copy()) for name in ("p1", "p2")]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{p}").exists() for p in ("p1", "p2")):  # both started and opened the workspace
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)
    (tmp_path / "go").touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    df = feedback.query(queue="race", ws=ws)
    assert len(df) == 2 * n and df["id"].is_unique
    for name in ("p1", "p2"):
        assert sorted(df[df["reviewer"] == name]["input"]) == sorted(f"{name} item {i}" for i in range(n))
    spans = df.groupby("reviewer")["at"].agg(["min", "max"])
    assert spans["min"].max() < spans["max"].min(), "the two writers did not overlap: this test proved nothing"
    assert check_log(ws).ok and feedback.verify(ws) == []


STALLER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import fmops_nb.feedback as fb
    real = fb.append_audit
    def stall(con, *args, **kw):  # every row is inserted, the transaction not yet committed: say so, then hang
        real(con, *args, **kw)
        Path(sys.argv[2]).touch()
        time.sleep(600)
    fb.append_audit = stall
    fb.import_file(sys.argv[1])
""")


def test_a_process_killed_inside_an_import_leaves_nothing_and_the_store_usable(ws, tmp_path):
    import signal
    feedback.log("before", "x", kind="note", value="kept", ws=ws)
    before = stored(ws)
    rows = [{"input": f"row {i}", "kind": "rating", "value": i % 5 + 1, "queue": "bulk"} for i in range(2000)]
    src, inside = jsonl(tmp_path / "bulk.jsonl", rows), tmp_path / "inside"
    p = subprocess.Popen([sys.executable, "-c", STALLER, str(src), str(inside)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    deadline = time.monotonic() + 120
    while not inside.exists():  # the child holds the write lock with all 2,000 rows inserted
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=60)
    assert stored(ws) == before  # nothing of the import, and the earlier record intact
    assert check_log(ws).ok and feedback.verify(ws) == []
    b = feedback.import_file(src, ws=ws)  # the lock is free again, and the same file imports whole
    assert b.rows == 2000 and len(feedback.query(queue="bulk", ws=ws)) == 2000


# ------------------------------------------------------------------------------------------ feedback as data (item 3)
def test_a_queues_judgements_become_training_rows_with_their_fingerprint(ws):
    for who, v in (("ann", "cat"), ("ben", "cat"), ("cy", "dog")):  # most reviewers say cat
        feedback.log("purrs on the sofa", "dog", kind="label", value=v, queue="pets2", reviewer=who, item="p1", ws=ws)
    feedback.log("barks at the door", "dog", kind="thumbs", value="up", queue="pets2", reviewer="ann", item="p2", ws=ws)
    feedback.log("swims in a bowl", "cat", kind="correction", value="fish", queue="pets2", reviewer="ann", item="p3",
                 ws=ws)
    feedback.log("lays eggs", "cat", kind="thumbs", value="down", queue="pets2", reviewer="ann", item="p4", ws=ws)
    feedback.log("hops", "frog", kind="label", value="rabbit", queue="pets2", reviewer="ann", item="p5", ws=ws)
    feedback.log("hops", "frog", kind="label", value="frog", queue="pets2", reviewer="ann", item="p5", ws=ws)  # changed
    feedback.log("ignored", "x", kind="label", value="y", queue="elsewhere", ws=ws)
    ts = feedback.training_set("feedback:pets2", input_columns=("text", "prompt"), answer_columns=("label", "response"),
                               ws=ws)
    assert list(ts["text"]) == list(ts["prompt"]) == ["purrs on the sofa", "barks at the door", "swims in a bowl", "hops"]
    assert list(ts["label"]) == list(ts["response"]) == ["cat", "dog", "fish", "frog"]
    lineage = ts.attrs["feedback"]
    assert lineage["queue"] == "pets2" and lineage["rows"] == 4 and lineage["judgements"] == 6
    # the fingerprint is of exactly the judgements used: another judgement changes it, an unrelated queue does not
    fp = lineage["fingerprint"]
    feedback.log("other", "x", kind="label", value="y", queue="elsewhere", ws=ws)
    assert feedback.training_set("pets2", ws=ws).attrs["feedback"]["fingerprint"] == fp
    feedback.log("purrs on the sofa", "dog", kind="label", value="cat", queue="pets2", reviewer="dee", item="p1", ws=ws)
    assert feedback.training_set("pets2", ws=ws).attrs["feedback"]["fingerprint"] != fp
    with pytest.raises(NotFoundError, match="no judgements that give a right answer"):
        feedback.training_set("feedback:empty", ws=ws)
    with pytest.raises(ValidationError, match="queue name"):
        feedback.training_set("feedback:../etc", ws=ws)
    # a query narrows the judgements: one reviewer's, and the filters are in the lineage
    ann = feedback.training_set("feedback:pets2?reviewer=ann", ws=ws)
    assert list(ann["label"]) == ["cat", "dog", "fish", "frog"] and ann.attrs["feedback"]["judgements"] == 4
    assert ann.attrs["feedback"]["filters"] == {"reviewer": "ann"} and ann.attrs["feedback"]["fingerprint"] != fp
    cy = feedback.training_set("feedback:pets2?reviewer=cy", ws=ws)
    assert list(cy["label"]) == ["dog"]
    with pytest.raises(NotFoundError, match="no judgements"):
        feedback.training_set("feedback:pets2?since=2999-01-01T00:00:00Z", ws=ws)
    for bad, why in (("feedback:pets2?reviwer=ann", "Did you mean 'reviewer'"), ("feedback:pets2?kind=label&kind=x",
                                                                                   "given twice"),
                     ("feedback:pets2?x", "not NAME=VALUE pairs")):
        with pytest.raises(ValidationError, match=why):
            feedback.training_set(bad, ws=ws)


def test_two_generations_compared_give_the_better_as_the_answer_and_count_for_each_version(ws):
    reg, v1 = registered(ws, "lm")
    v2 = reg.register("lm", ws.root.parent / "lm.safetensors", parent=v1.id)
    pair = dict(output="Paris is in Germany.", version=v1.id, queue="gen",
                meta={"other": "Paris is in France.", "other_version": v2.id})
    feedback.log("Where is Paris?", kind="label", value="B better", item="q1", **pair, ws=ws)
    feedback.log("Capital of Italy?", "Rome.", kind="label", value="both fine", item="q2", version=v1.id, queue="gen",
                 meta={"other": "Rome", "other_version": v2.id}, ws=ws)
    ts = feedback.training_set("gen", ws=ws)
    assert list(ts["label"]) == ["Paris is in France.", "Rome."]
    m = feedback.metrics(queue="gen", by="version", ws=ws)
    assert m[v1.id]["accuracy"] == 0.5 and m[v2.id]["accuracy"] == 1.0


@pytest.mark.slow  # two registered versions and a policy check (monitor imports the fine-tune engine)
def test_feedback_metrics_by_version_and_over_time_feed_a_policy(ws, tmp_path):
    reg, v1 = registered(ws, "clf")
    v2 = reg.register("clf", ws.root.parent / "clf.safetensors", parent=v1.id)
    week1, week2 = datetime(2026, 11, 2, 9, tzinfo=timezone.utc), datetime(2026, 11, 10, 9, tzinfo=timezone.utc)
    rows = ([dict(input=f"a{i}", output="spam", kind="label", value="spam" if i < 3 else "ham", version=v1.id,
                  at=week1) for i in range(4)]  # v1: 3 of 4 right
            + [dict(input=f"b{i}", output="ham", kind="thumbs", value="up" if i else "down", version=v2.id, at=week2)
               for i in range(4)]  # v2: 3 of 4 right
            + [dict(input="c", output="hm", kind="correction", value="ham", version=v2.id, at=week2),
               dict(input="d", output="long answer", kind="rating", value=2, version=v2.id, at=week2),
               dict(input="e", output="ok", kind="rating", value=4, version=v2.id, at=week2),
               dict(input="f", output="ok", kind="note", value="not a judgement of right or wrong", at=week2)])
    feedback.log_many(rows, defaults={"queue": "live"}, ws=ws)
    m = feedback.metrics(ws=ws)
    assert (m["reviewed"], m["rated"]) == (9, 2)
    assert m["accuracy"] == pytest.approx(6 / 9) and m["correction_rate"] == pytest.approx(1 / 9)
    assert m["mean_rating"] == 3 and m["rating_score"] == pytest.approx(0.5)
    by_version = feedback.metrics(by="version", ws=ws)
    assert by_version[v1.id]["accuracy"] == 0.75 and by_version[v2.id]["accuracy"] == pytest.approx(3 / 5)
    assert by_version[v2.id]["correction_rate"] == pytest.approx(1 / 5) and by_version[v1.id]["mean_rating"] is None
    assert feedback.metrics(version=v2.id, ws=ws) == by_version[v2.id]
    by_week = feedback.metrics(by="week", ws=ws)
    assert list(by_week) == ["2026-11-02", "2026-11-09"] and by_week["2026-11-02"]["accuracy"] == 0.75
    with pytest.raises(ValidationError, match="Unknown grouping 'hour'"):
        feedback.metrics(by="hour", ws=ws)
    # a policy reads them as the maintenance report records them: `feedback.accuracy`
    from fmops_nb import monitor
    pol = tmp_path / "policies.yaml"
    pol.write_text("policies:\n  - name: reviewers-disagree-with-the-model\n    when: feedback.accuracy < 0.7\n"
                   "    severity: critical\n")
    fired = monitor.check({"feedback": feedback.metrics(version=v2.id, ws=ws)}, ws=ws, path=pol, display=False)
    assert [f.state for f in fired.firings] == ["fired"]
    assert "feedback.accuracy = 0.6" in monitor.alerts(ws)[0]["message"]
    quiet = monitor.check({"feedback": feedback.metrics(version=v1.id, ws=ws)}, ws=ws, path=pol, display=False)
    assert [f.state for f in quiet.firings] == ["quiet"]


NUMPY_SCRIPT = textwrap.dedent("""
    import zlib, tempfile, numpy as np, pyarrow.parquet as pq
    from safetensors.numpy import save_file
    from fmops_nb.finetune import run_spec, report, save_model
    spec = run_spec()
    t = pq.read_table(spec['train']).to_pydict()
    texts, labels = t[spec['text_column']], t[spec['label_column']]
    classes = sorted(set(labels))
    x = np.zeros((len(texts), 64))
    for i, s in enumerate(texts):
        for w in s.lower().split(): x[i, zlib.crc32(w.encode()) % 64] += 1
    y = np.array([classes.index(l) for l in labels], dtype=float)
    w = np.zeros(64)
    for step in range(1, 4):
        p = 1 / (1 + np.exp(-x @ w))
        report(step=step, loss=float(-np.mean(y * np.log(p + 1e-9) + (1 - y) * np.log(1 - p + 1e-9))))
        w -= 0.5 * x.T @ (p - y) / len(y)
    d = tempfile.mkdtemp()
    save_file({'w': w.astype(np.float32)}, f"{d}/model.safetensors")
    save_model(d)
""")  # a user's training script: logistic regression on hashed words, three steps in numpy (no torch to import)


@pytest.mark.slow  # a real fine-tune in its own process, a few seconds
def test_a_fine_tune_trains_on_a_queue_and_the_registered_version_cites_the_judgements(ws, tmp_path):
    from fmops_nb.finetune import launch
    from fmops_nb.registry import Registry
    words = {"good": "works great thanks", "bad": "broken again refund"}
    rows = [dict(input=f"{words[lab]} {i}", output="good", kind="label", value=lab, item=f"t{i}")
            for i, lab in enumerate(["good", "bad"] * 16)]
    feedback.log_many(rows, defaults={"queue": "tickets", "reviewer": "ann"}, ws=ws)
    script = tmp_path / "train_np.py"
    script.write_text(NUMPY_SCRIPT)
    run = launch(base="", recipe="script", script=str(script), train="feedback:tickets", model="np", batch_size=8,
                 max_steps=3, seed=0, ws=ws, wait=True)
    assert run.status == "finished", run.tail(30)
    losses = [e["loss"] for e in run.events("step")]
    assert len(losses) == 3 and losses[-1] < losses[0]  # it learned from the judgements
    v = Registry(ws, log=False).get(run.version)
    cited = v.meta["data"]["train"]["feedback"]
    assert cited == feedback.training_set("tickets", ws=ws).attrs["feedback"]
    assert cited["queue"] == "tickets" and cited["judgements"] == 32
    assert cited["fingerprint"] == feedback.fingerprint(queue="tickets", ws=ws)  # every judgement of it was used
