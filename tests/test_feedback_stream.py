"""The feedback store's follow-ups to issue 16: judgements about a deleted (or never registered) version are refused
with nothing written, and `import_file` streams a file — its memory flat in the file's size, one transaction, the
same `Batch` a user checks with the public API, and a bad row at the very end still leaving nothing behind."""
import json
import sqlite3
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fmops_nb import feedback
from fmops_nb.audit import check_log
from fmops_nb.core import Workspace
from fmops_nb.errors import FmopsError, NotFoundError, ValidationError
from test_feedback import stored  # every feedback and audit row: what a refused call must leave unchanged


@pytest.fixture
def ws(isolated_workspace, monkeypatch):
    monkeypatch.setenv("FMOPS_PROGRESS", "0")
    return Workspace.open(isolated_workspace)




def clf_with_a_deleted_version(ws):
    "Real registered versions of 'clf': v1 in production, v2 deleted."
    from safetensors.numpy import save_file
    from fmops_nb.registry import Registry
    p = ws.root.parent / "clf.safetensors"
    save_file({"w": np.arange(4, dtype=np.float32).reshape(2, 2)}, str(p))
    reg = Registry(ws, log=False)
    v1 = reg.register("clf", p)
    reg.promote(v1.id, to="production", reason="first")
    v2 = reg.register("clf", p, parent=v1.id)
    reg.delete(v2.id, reason="trained on the wrong split")
    assert [v.id for v in reg.versions("clf")] == ["clf:v1"]
    return reg


def jsonl(path: Path, rows) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


# ------------------------------------------------------------------------------------------ deleted versions
def test_a_deleted_version_is_refused_by_every_entry_point_and_nothing_is_written(ws, tmp_path, hostile):
    clf_with_a_deleted_version(ws)
    feedback.log("q", "a", kind="thumbs", value="up", version="clf:v1", ws=ws)  # a version that remains: stored
    feedback.log("q", "b", kind="thumbs", value="up", version="clf:production", ws=ws)  # an alias: its version
    before = stored(ws)
    assert [r[8] for r in before[0]] == ["clf:v1", "clf:v1"]
    hostile("feedback about a deleted version, through log, log_many and both file formats")
    with pytest.raises(NotFoundError) as e:
        feedback.log("q", "c", kind="thumbs", value="down", version="clf:v2", ws=ws)
    msg = str(e.value)
    assert "'clf:v2' was deleted" in msg and "fmops registry ls clf" in msg and "leave version out" in msg
    ok = {"input": "x", "kind": "note", "value": "n"}
    with pytest.raises(NotFoundError, match="Record 3: The version 'clf:v2' was deleted"):
        feedback.log_many([ok | {"version": "clf:v1"}, ok, ok | {"version": "clf:v2"}], ws=ws)
    with pytest.raises(NotFoundError, match="Record 2: The version 'clf:v9' is not registered"):
        feedback.log_many([ok, ok | {"version": "clf:v9"}], ws=ws)  # never registered
    rows = [ok | {"input": f"x{i}", "version": "clf:v1"} for i in range(4)] + [ok | {"version": "clf:v2"}]
    with pytest.raises(NotFoundError, match="Line 5 of .*'clf:v2' was deleted.*Nothing from the file was written"):
        feedback.import_file(jsonl(tmp_path / "in.jsonl", rows), ws=ws)
    pd.DataFrame(rows).to_parquet(tmp_path / "in.parquet")
    with pytest.raises(NotFoundError, match="Row 5 of .*'clf:v2' was deleted"):
        feedback.import_file(tmp_path / "in.parquet", ws=ws)
    with pytest.raises(FmopsError, match="was deleted"):  # a default for every row, too
        feedback.import_file(jsonl(tmp_path / "d.jsonl", [ok]), defaults={"version": "clf:v2"}, ws=ws)
    assert stored(ws) == before and check_log(ws).ok and feedback.verify(ws) == []


# ------------------------------------------------------------------------------------------ the Batch stays the same
def test_an_import_answers_with_the_records_it_stored(ws, tmp_path):
    at = "2026-12-01T09:00:00Z"
    rows = [{"id": f"r{i}", "input": f"text {i}", "output": "pos", "kind": "label", "value": "neg", "at": at,
             "reviewer": "ann", "queue": "triage"} for i in (5, 2, 9, 1)]
    feedback.log_many([rows[1]], ws=ws)  # r2 is already stored
    src = jsonl(tmp_path / "in.jsonl", rows + [rows[0]])  # r5 twice in the file, the same judgement
    b = feedback.import_file(src, ws=ws)
    assert (b.rows, b.ids, b.skipped, b.path) == (3, ["r5", "r9", "r1"], 2, str(src))
    # the fingerprint is that of the three records written, as the public API computes it elsewhere
    other = Workspace.open(tmp_path / "other")
    again = feedback.log_many([rows[0], rows[2], rows[3]], ws=other)
    assert b.fingerprint == again.fingerprint == feedback.fingerprint(ws=other)
    con = sqlite3.connect(ws.db_path)
    audit = json.loads(con.execute("SELECT after FROM audit WHERE action='feedback' ORDER BY seq DESC").fetchone()[0])
    con.close()
    assert (audit["records"], audit["first"], audit["last"], audit["sha256"]) == (3, "r5", "r1", b.fingerprint)
    # the same records through a user's Parquet file, into a third workspace: the same answer
    pd.DataFrame(rows[:1] + rows[2:]).to_parquet(tmp_path / "in.parquet")
    third = Workspace.open(tmp_path / "third")
    p = feedback.import_file(tmp_path / "in.parquet", ws=third)
    assert (p.rows, p.ids, p.fingerprint) == (3, ["r5", "r9", "r1"], b.fingerprint)
    assert feedback.import_file(src, ws=ws).rows == 0  # again: nothing new
    assert feedback.verify(ws) == [] and check_log(ws).ok


# ------------------------------------------------------------------------------------------ streaming
def bulk(n: int, words: int = 12) -> list:
    "n judgements of a ticket `words` sentences long (600 bytes a row with 12)."
    return [{"input": f"ticket {i}: " + "the printer on floor 3 is out of toner again " * words, "output": "hardware",
             "kind": "label", "value": "hardware" if i % 3 else "facilities", "reviewer": "ann", "queue": "bulk"}
            for i in range(n)]


def peak_of_import(path: Path, ws) -> tuple:
    "The peak of Python's traced memory while `path` is imported, and the Batch."
    tracemalloc.start()
    try:
        b = feedback.import_file(path, ws=ws)
        return tracemalloc.get_traced_memory()[1], b
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_in_the_size_of_the_file(tmp_path, isolated_workspace, monkeypatch):
    monkeypatch.setenv("FMOPS_PROGRESS", "0")
    small, large = jsonl(tmp_path / "small.jsonl", bulk(400, 50)), jsonl(tmp_path / "large.jsonl", bulk(4_000, 50))
    assert large.stat().st_size > 9_000_000
    size, peaks = large.stat().st_size, {}
    for f in (small, large):
        peaks[f.stem], b = peak_of_import(f, Workspace.open(tmp_path / f.stem))
        assert b.rows == len(b.ids) == {"small": 400, "large": 4_000}[f.stem]
        f.unlink()
    # ten times the rows, far less than ten times the memory (the list of ids in the Batch is what grows)
    assert peaks["large"] < 3 * peaks["small"], peaks
    assert peaks["large"] < size / 4, (peaks, size)  # the file is never held in memory


def test_a_bad_row_at_the_end_of_a_large_file_leaves_nothing(ws, tmp_path):
    clf_with_a_deleted_version(ws)
    feedback.log("earlier", "x", kind="note", value="kept", ws=ws)
    before = stored(ws)
    rows = bulk(3_000)
    for r in rows:
        r["version"] = "clf:v1"
    # JSON Lines: the last line names the deleted version, which only the writing pass can see (after 2,999 inserts)
    rows[-1]["version"] = "clf:v2"
    with pytest.raises(NotFoundError, match="Line 3000 of .*'clf:v2' was deleted.*Nothing from the file"):
        feedback.import_file(jsonl(tmp_path / "big.jsonl", rows), ws=ws)
    assert stored(ws) == before
    # Parquet in row groups of 500: the last row of the last group is a rating off the scale
    for r in rows:
        r |= {"version": "clf:v1", "kind": "rating", "value": 4}
    rows[-1]["value"] = 9
    df = pd.DataFrame(rows)
    df.to_parquet(tmp_path / "big.parquet", row_group_size=500)
    import pyarrow.parquet as pq
    assert pq.ParquetFile(tmp_path / "big.parquet").num_row_groups == 6
    with pytest.raises(ValidationError, match="Row 3000 of .*outside the scale.*Nothing from the file"):
        feedback.import_file(tmp_path / "big.parquet", ws=ws)
    assert stored(ws) == before and check_log(ws).ok and feedback.verify(ws) == []
    # the file made good imports whole, in one write with one audit row
    df.loc[len(df) - 1, "value"] = 4
    df.to_parquet(tmp_path / "big.parquet", row_group_size=500)
    b = feedback.import_file(tmp_path / "big.parquet", ws=ws)
    assert b.rows == 3_000 and b.fingerprint == feedback.fingerprint(queue="bulk", ws=ws)
    assert len(stored(ws)[1]) == len(before[1]) + 1 and feedback.verify(ws) == []
