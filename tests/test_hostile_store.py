"""The registry's store and audit log against hostile and broken inputs: each test asserts the clear error and that
nothing stored changed."""
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from fmops_nb.core import Workspace, atomic_write
from fmops_nb.errors import ConfigError, ValidationError, WorkspaceError, AuditWarning, TrackingWarning
from fmops_nb.registry import Registry, verify_audit
from fmops_nb.audit import reanchor_audit, _row_hash
from fmops_nb.blobs import safe_files

FMOPS = [shutil.which("fmops") or "fmops"]
KEY, OTHER_KEY = "k" * 32, "z" * 32


def fmops(*args, env=None, cwd=None, timeout=300, prefix=()):
    return subprocess.run([*prefix, *FMOPS, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, **(env or {})})


def st_file(path, tensors: dict, metadata=None) -> Path:
    "A real safetensors file from numpy arrays."
    from safetensors.numpy import save_file
    save_file({k: np.asarray(v) for k, v in tensors.items()}, str(path), metadata=metadata)
    return Path(path)


def raw_st(path, header, data: bytes = b"", n: int | None = None) -> Path:
    "A safetensors file written byte by byte: `header` (JSON-able or bytes), then `data`; `n` overrides the length."
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    Path(path).write_bytes(struct.pack("<Q", len(h) if n is None else n) + h + data)
    return Path(path)


def stored(ws: Workspace) -> dict:
    "Everything the registry keeps, read with a plain read-only connection: table rows, blobs and their content hashes."
    out = {"blobs": {}}
    for p in sorted(ws.blobs_dir.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            out["blobs"][p.relative_to(ws.blobs_dir).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    if ws.db_path.is_file() and ws.db_path.stat().st_size:
        con = sqlite3.connect(f"{ws.db_path.as_uri()}?mode=ro", uri=True)
        try:
            for t in ("models", "versions", "files", "tensors", "aliases", "alias_history", "audit"):
                out[t] = con.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
        except sqlite3.DatabaseError:  # a damaged file: compare its bytes
            out["db"] = hashlib.sha256(ws.db_path.read_bytes()).hexdigest()
        finally:
            con.close()
    return out


def files_of(root: Path) -> dict:
    "{path: (sha256, mode)} of every file under `root`."
    return {p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), stat.S_IMODE(p.stat().st_mode))
            for p in sorted(root.rglob("*")) if p.is_file()}


def raw_db(ws: Workspace) -> sqlite3.Connection:
    "A connection that bypasses fmops, as someone editing the database behind the registry's back would use."
    return sqlite3.connect(ws.db_path, isolation_level=None)


def small_registry(log=False) -> Registry:
    import torch
    torch.set_num_threads(1)
    reg = Registry(log=log)
    reg.register("m", {"w": torch.zeros(4, 4), "b": torch.zeros(4)}, metrics={"accuracy": 0.8}, aliases=["production"])
    reg.register("m", {"w": torch.ones(4, 4), "b": torch.zeros(4)}, parent="m:v1", metrics={"accuracy": 0.9})
    reg.promote("m:v2", to="production")
    return reg


def rechain(con, start_mac=None):
    "Recompute every row's hash from the first one, as someone without the key would (the HMACs set to `start_mac`)."
    prev = "0" * 64
    for r in con.execute("SELECT seq, at, actor, action, subject, before, after FROM audit ORDER BY seq").fetchall():
        h = _row_hash(prev, *r)
        con.execute("UPDATE audit SET prev_hash=?, hash=?, mac=? WHERE seq=?", (prev, h, start_mac, r[0]))
        prev = h


# ---------------------------------------------------------------- 5. the audit log is evidence

@pytest.mark.slow
@pytest.mark.hostile
def test_edits_behind_the_registrys_back_are_named_by_verify(hostile):
    reg = small_registry()
    v1 = reg.get("m:v1")
    assert verify_audit(reg.ws).ok
    con = raw_db(reg.ws)
    hostile("an alias moved with SQL, not through the registry")
    con.execute("UPDATE aliases SET version='m:v1' WHERE model='m' AND alias='production'")
    hostile("a version's manifest swapped for another's")
    con.execute("UPDATE versions SET manifest=? WHERE id='m:v2'", (v1.manifest,))
    hostile("a version inserted with SQL")
    con.execute("INSERT INTO versions SELECT 'm:v9', model, 9, format, parent, base, manifest, card, meta, state, "
                "created_at, created_by FROM versions WHERE id='m:v1'")
    hostile("an alias set with SQL")
    con.execute("INSERT INTO aliases VALUES ('m', 'staging', 'm:v9', '2026-01-01')")
    con.close()
    before = stored(reg.ws)
    c = verify_audit(reg.ws)
    assert not c.ok
    text = "\n".join(c.problems)
    assert ("alias m:production points at m:v1, but the audit log (row 4) last moved it to m:v2: it was moved behind "
            "the registry's back") in text
    assert "version m:v2's manifest is not the one registered" in text
    assert "version m:v9 is not in the audit log: it was inserted behind the registry's back" in text
    assert "alias m:staging points at m:v9, but the audit log never set it" in text
    r = fmops("audit", "verify")
    assert r.returncode == 1 and "m:production points at m:v1" in r.stdout
    assert "the files of m:v2 in the database are not those of its manifest" in text  # the swapped manifest lists v1's
    assert "the tensor records of m:v2 in the database are not those of its manifest" in text  # and v1's tensors
    assert r.stderr.strip() == "fmops: error: The audit log has 6 problem(s); see above."
    assert stored(reg.ws) == before  # verify changed nothing


@pytest.mark.hostile
def test_deleted_version_revived_behind_the_registrys_back(hostile):
    reg = small_registry()
    import torch
    reg.register("m", {"w": torch.full((4, 4), 2.0), "b": torch.zeros(4)})
    reg.delete("m:v3")
    hostile("a deleted version revived with SQL")
    with raw_db(reg.ws) as con:
        con.execute("UPDATE versions SET state='ready' WHERE id='m:v3'")
    c = verify_audit(reg.ws)
    assert any("version m:v3 was deleted (row" in p and "revived behind the registry's back" in p
               for p in c.problems), c


def test_unkeyed_verify_says_plainly_what_it_detects():
    reg = small_registry()
    c = verify_audit(reg.ws)
    assert c.ok and "chain intact" in repr(c)
    assert "detects accidental damage and single edits, but not a rewrite of the whole chain" in c.mode
    r = fmops("audit", "verify")
    assert r.returncode == 0 and "Mode: unkeyed" in r.stdout and "not a rewrite" in r.stdout


@pytest.mark.hostile
def test_keyed_chain_resists_a_rewrite_without_the_key(monkeypatch, tmp_path, hostile):
    monkeypatch.setenv("FMOPS_AUDIT_KEY", KEY)
    reg = small_registry()
    c = verify_audit(reg.ws)
    assert c.ok and c.mode.startswith("keyed: rows carry an HMAC-SHA256 made with the key from FMOPS_AUDIT_KEY"), c
    keyed = stored(reg.ws)
    assert all(row[-1] for row in keyed["audit"])  # every row carries its HMAC

    hostile("verify with the wrong key")
    monkeypatch.setenv("FMOPS_AUDIT_KEY", OTHER_KEY)
    c = verify_audit(reg.ws)
    problems = "\n".join(c.problems)
    assert "the HMAC of rows 1..4 does not match the key from FMOPS_AUDIT_KEY: the key is wrong" in problems
    assert any("anchor's HMAC does not match the audit key" in p for p in c.problems)
    hostile("register with the wrong key")
    with pytest.raises(ConfigError, match="is not the key the audit log was written with"):
        reg.register("m", tmp_path / "whatever.safetensors")
    with pytest.raises(ConfigError, match="is not the key the audit log was written with"):
        reg.promote("m:v1", to="staging")
    hostile("register with no key at all on a keyed log")
    monkeypatch.delenv("FMOPS_AUDIT_KEY")
    with pytest.raises(ConfigError, match="no audit key is configured here, so fmops will not add an unkeyed row"):
        reg.promote("m:v1", to="staging")
    c = verify_audit(reg.ws)
    assert "rows 1..4 carry HMACs, but no audit key is configured here, so they cannot be checked" in c.problems[0]
    assert stored(reg.ws) == keyed  # nothing was written by any refused attempt

    hostile("the chain rewritten consistently (alias moved back, hashes recomputed, HMACs dropped, anchor rewritten)")
    with raw_db(reg.ws) as con:
        con.execute("UPDATE audit SET after=? WHERE seq=4", (json.dumps({"version": "m:v1"}, sort_keys=True),))
        con.execute("UPDATE aliases SET version='m:v1' WHERE alias='production'")
        con.execute("UPDATE alias_history SET version='m:v1' WHERE seq=2")  # the history replayed from the log too
        rechain(con)
        seq, h = con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    reg.ws.anchor_path.write_text(json.dumps({"rows": 4, "seq": seq, "hash": h, "at": "2026-12-01T00:00:00Z"}))
    c = verify_audit(reg.ws)  # without the key, the rewrite is consistent, and the mode says that it cannot tell
    assert c.ok and "not a rewrite of the whole chain" in c.mode
    monkeypatch.setenv("FMOPS_AUDIT_KEY", KEY)
    c = verify_audit(reg.ws)
    assert not c.ok and "none of the 4 rows carries an HMAC although a key is configured" in c.problems[0], c
    r = fmops("audit", "verify")
    assert r.returncode == 1 and "none of the 4 rows carries an HMAC" in r.stdout and "Traceback" not in r.stderr


@pytest.mark.hostile
def test_keyed_chain_rewrite_keeping_the_old_hmacs_is_named(monkeypatch, hostile):
    monkeypatch.setenv("FMOPS_AUDIT_KEY", KEY)
    reg = small_registry()
    hostile("one row edited and the chain after it recomputed, the old HMACs left in place")
    with raw_db(reg.ws) as con:
        con.execute("UPDATE audit SET actor='mallory' WHERE seq=2")
        prev = "0" * 64
        rows = con.execute("SELECT seq, at, actor, action, subject, before, after FROM audit ORDER BY seq").fetchall()
        for r in rows:
            h = _row_hash(prev, *r)
            con.execute("UPDATE audit SET prev_hash=?, hash=? WHERE seq=?", (prev, h, r[0]))
            prev = h
    c = verify_audit(reg.ws)
    assert "the HMAC of rows 2..4 does not match the key from FMOPS_AUDIT_KEY" in "\n".join(c.problems), c
    assert any("row 4 is not the row the anchor recorded" in p for p in c.problems)


@pytest.mark.hostile
def test_audit_key_file_inside_the_workspace_is_refused(tmp_path, hostile):
    reg = small_registry()
    before = stored(reg.ws)
    (reg.ws.root / "audit.key").write_text(KEY)
    hostile("audit.key_file pointing inside the workspace")
    reg.ws.config_path.write_text('[audit]\nkey_file = "audit.key"\n')
    with pytest.raises(ConfigError, match="is inside the workspace folder .*Keep the key file outside the workspace"):
        verify_audit(Workspace.open())
    r = fmops("registry", "promote", "m:v1", "--to", "staging", "--no-wandb")
    assert r.returncode == 1 and "inside the workspace folder" in r.stderr and "Traceback" not in r.stderr
    hostile("a key file that is too short")
    (tmp_path / "short.key").write_text("abc")
    reg.ws.config_path.write_text(f'[audit]\nkey_file = "{tmp_path / "short.key"}"\n')
    with pytest.raises(ConfigError, match="is 3 bytes long; use at least 16 random bytes"):
        verify_audit(Workspace.open())
    assert stored(reg.ws) == before
    (tmp_path / "good.key").write_text(KEY + "\n")  # outside: accepted, and the next row seals the log
    reg.ws.config_path.write_text(f'[audit]\nkey_file = "{tmp_path / "good.key"}"\n')
    ws = Workspace.open()
    assert "none of the 4 rows carries an HMAC" in verify_audit(ws).problems[0]
    reanchor_audit(ws, "audit key configured")
    c = verify_audit(ws)
    assert c.ok and "Rows 1..4 were written before the key was configured; row 5's HMAC covers them." in c.mode, c


@pytest.mark.hostile
def test_anchor_detects_a_cut_tail(hostile):
    reg = small_registry()
    anchor = json.loads(reg.ws.anchor_path.read_text())
    assert (anchor["rows"], anchor["seq"]) == (4, 4)
    hostile("the last two audit rows deleted and SQLite's sequence counter reset")
    with raw_db(reg.ws) as con:
        con.execute("DELETE FROM audit WHERE seq > 2")
        con.execute("UPDATE sqlite_sequence SET seq=2 WHERE name='audit'")
        con.execute("DELETE FROM aliases WHERE alias='production'")
    c = verify_audit(reg.ws)
    assert not any("missing (deleted)" in p for p in c.problems)  # the chain alone cannot see it ...
    cut = "the anchor records row 4 with 4 rows, but the log ends at row 2 with 2 rows: rows were cut from its end"
    assert any(cut in p for p in c.problems), c  # ... the anchor does
    import torch
    with pytest.warns(AuditWarning, match="no longer continues the head anchored"):  # a write keeps the evidence
        reg.register("m", {"w": torch.zeros(4, 4), "b": torch.ones(4)}, check_names=False)
    assert json.loads(reg.ws.anchor_path.read_text()) == anchor
    assert not verify_audit(reg.ws).ok
    blobs = stored(reg.ws)["blobs"]
    with pytest.raises(WorkspaceError, match="gc deleted nothing: the audit log does not show the database whole"):
        reg.gc(grace_s=0)
    assert stored(reg.ws)["blobs"] == blobs


@pytest.mark.slow
@pytest.mark.hostile
def test_emptied_database_is_refused_by_the_anchor(hostile):
    reg = small_registry()
    hostile("every row deleted from every table, SQLite's counters too")
    with raw_db(reg.ws) as con:
        for t in ("tensors", "files", "aliases", "alias_history", "versions", "models", "audit", "sqlite_sequence"):
            con.execute(f"DELETE FROM {t}")
    before = stored(reg.ws)
    with pytest.raises(WorkspaceError, match=r"fmops.db has an empty audit log, but this workspace held data "
                                             r"\(the audit anchor .* records 4 audit rows\)"):
        Workspace.open()
    for cmd in (("registry", "ls"), ("registry", "gc", "--grace", "0"), ("audit", "verify")):
        r = fmops(*cmd)
        assert r.returncode == 1 and "Restore fmops.db from a backup" in r.stderr, (cmd, r.stderr)
        assert "Traceback" not in r.stderr
    assert stored(reg.ws) == before


@pytest.mark.hostile
@pytest.mark.slow
def test_wandb_runs_anchor_the_head_too(hostile):
    reg = small_registry(log=True)  # each registration and alias move is a W&B run recording the head
    from fmops_nb.tracking import find_runs, read_run
    heads = [read_run(p).audit_head for p in find_runs(reg.ws)]
    assert [h["seq"] for h in heads] == [2, 3, 4] and all(len(h["hash"]) == 64 for h in heads), heads
    assert verify_audit(reg.ws, wandb=True).ok
    anchor = json.loads(reg.ws.anchor_path.read_text())
    hostile("the tail cut and the anchor file deleted")
    with raw_db(reg.ws) as con:
        con.execute("DELETE FROM audit WHERE seq > 2")
        con.execute("UPDATE sqlite_sequence SET seq=2 WHERE name='audit'")
    reg.ws.anchor_path.unlink()
    c = verify_audit(reg.ws, wandb=True)
    assert sum("recorded the log's head at row" in p and "rows were cut" in p for p in c.problems) == 2, c
    r = fmops("audit", "verify", "--wandb", "--json")
    d = json.loads(r.stdout)
    assert r.returncode == 1 and not d["ok"] and any("there is no anchor file" in p for p in d["problems"])
    with raw_db(reg.ws) as con:  # as after restoring a backup taken at row 2: the tables match the log again
        con.execute("UPDATE aliases SET version='m:v1' WHERE alias='production'")
        con.execute("DELETE FROM alias_history WHERE seq > 1")
        for t, col in (("tensors", "version"), ("files", "version"), ("versions", "id")):
            con.execute(f"DELETE FROM {t} WHERE {col}='m:v2'")
    reg.ws.anchor_path.write_text(json.dumps(anchor))
    reanchor_audit(reg.ws, "restored the backup taken at row 2")  # a deliberate, audited acceptance of the loss
    c = verify_audit(reg.ws, wandb=True)
    accepted = "as accepted by the re-anchor at row 3 (restored the backup taken at row 2)"
    assert c.ok and sum(accepted in n for n in c.notes) == 2, c


@pytest.mark.slow
@pytest.mark.hostile
@pytest.mark.parametrize("damage", ["missing", "empty", "garbage", "malformed"])
def test_lost_or_corrupt_database_beside_blobs_is_refused(damage, hostile):
    reg = small_registry()
    ws = reg.ws
    db = ws.db_path
    blobs = stored(ws)["blobs"]
    assert blobs
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    hostile(f"fmops.db {damage}")
    if damage == "missing": db.unlink()
    elif damage == "empty": db.write_bytes(b"")
    elif damage == "garbage": db.write_bytes(os.urandom(4096) + db.read_bytes()[4096:])
    else:
        data = bytearray(db.read_bytes())
        data[4096:] = b"\xa5" * (len(data) - 4096)  # every page after the first overwritten
        db.write_bytes(bytes(data))
    disk = db.read_bytes() if db.exists() else None
    with pytest.raises(WorkspaceError, match="Restore fmops.db from a backup"):
        Workspace.open()
    for cmd in (("registry", "ls"), ("registry", "gc", "--grace", "0"), ("workspace", "--init"), ("audit", "verify")):
        r = fmops(*cmd)
        assert r.returncode == 1 and r.stderr.startswith("fmops: error:") and "Traceback" not in r.stderr, r.stderr
        assert "Restore fmops.db from a backup" in r.stderr or "the workspace database failed" in r.stderr, r.stderr
    assert (db.read_bytes() if db.exists() else None) == disk  # not recreated, not rewritten
    assert stored(ws)["blobs"] == blobs


@pytest.mark.hostile
def test_gc_refuses_when_the_log_cannot_prove_blobs_unreferenced(hostile):
    reg = small_registry()
    import torch
    v3 = reg.register("m", {"w": torch.full((4, 4), 3.0), "b": torch.zeros(4)})
    reg.delete(v3.id)  # its weights are unreferenced now: gc would remove them
    assert reg.gc(grace_s=0, dry_run=True)["blobs_removed"] >= 1
    hostile("an alias moved behind the registry's back before gc")
    with raw_db(reg.ws) as con:
        con.execute("UPDATE aliases SET version='m:v1' WHERE alias='production'")
    before = stored(reg.ws)
    with pytest.raises(WorkspaceError, match="gc deleted nothing.*the first: alias m:production points at m:v1"):
        reg.gc(grace_s=0)
    r = fmops("registry", "gc", "--grace", "0")
    assert r.returncode == 1 and "gc deleted nothing" in r.stderr
    assert stored(reg.ws) == before
    hostile("a file row pointed at another blob (gc would keep the wrong one)")
    with raw_db(reg.ws) as con:
        con.execute("UPDATE aliases SET version='m:v2' WHERE alias='production'")
        con.execute("UPDATE files SET sha256=? WHERE version='m:v2'", (v3.files["model.safetensors"]["sha256"],))
    with pytest.raises(WorkspaceError, match="the files of m:v2 in the database are not those of its manifest"):
        reg.gc(grace_s=0)
    assert stored(reg.ws)["blobs"] == before["blobs"]


# ---------------------------------------------------------------- 6. the store keeps only what was meant

REREGISTER = textwrap.dedent(r"""
    import os, sys, time
    from pathlib import Path
    from fmops_nb.core import Workspace
    from fmops_nb.registry import Registry
    from fmops_nb.blobs import BlobStore
    flag, target = Path(sys.argv[1]), sys.argv[2]
    reuse = BlobStore._reuse
    def paused(self, sha, size):
        ok = reuse(self, sha, size)
        if sha == target and not (flag / 'reused').exists():
            (flag / 'reused').write_text(str(ok))
            while not (flag / 'go').exists(): time.sleep(0.02)  # wait for the test's event, not for a time
        return ok
    BlobStore._reuse = paused
    v = Registry(Workspace.open(), log=False).register('m', sys.argv[3])
    print(v.id, flush=True)
""")


@pytest.mark.hostile
@pytest.mark.slow
def test_gc_waits_for_a_registration_that_reuses_a_blob(tmp_path, hostile):
    f = st_file(tmp_path / "w.safetensors", {"w": np.arange(64, dtype=np.float32)})
    reg = Registry(log=False)
    v1 = reg.register("m", f)
    sha = v1.files["model.safetensors"]["sha256"]
    reg.delete(v1.id)  # the weights blob is unreferenced: gc may remove it, unless a registration is reusing it
    os.utime(reg.blobs.path(sha), (1, 1))
    hostile("gc started while another process re-registers the same file")
    flag = tmp_path / "flags"
    flag.mkdir()
    r = subprocess.Popen([sys.executable, "-c", REREGISTER, str(flag), sha, str(f)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        while not (flag / "reused").exists():  # the event: the registration found the blob whole and holds it
            assert r.poll() is None, r.communicate()
            time.sleep(0.02)
        assert (flag / "reused").read_text() == "True"
        g = subprocess.Popen([*FMOPS, "registry", "gc", "--grace", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        line = g.stderr.readline()  # gc says it waits for the registration in progress ...
        assert line.startswith("Waiting for the registrations in progress to finish"), (line, g.communicate())
    finally:
        (flag / "go").write_text("go")  # ... and only then does the registration go on
    out, err = r.communicate(timeout=300)
    assert r.returncode == 0 and out.strip() == "m:v2", err
    gout, gerr = g.communicate(timeout=300)
    assert g.returncode == 0, gerr
    reg = Registry(log=False)
    assert reg.blobs.verify(sha) and set(reg.files("m:v2")) == {"model.safetensors"}
    assert verify_audit(reg.ws).ok


@pytest.mark.hostile
def test_corrupt_blob_is_rewritten_when_the_file_is_registered_again(tmp_path, hostile):
    f = st_file(tmp_path / "w.safetensors", {"w": np.arange(64, dtype=np.float32)})
    reg = Registry(log=False)
    v1 = reg.register("m", f)
    p = reg.blobs.path(v1.files["model.safetensors"]["sha256"])
    good = p.read_bytes()
    hostile("a stored blob with one byte flipped")
    os.chmod(p, 0o644)
    p.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
    with pytest.raises(WorkspaceError, match="is corrupted: its content no longer matches its hash"):
        reg.load(v1.id)
    v2 = reg.register("m", f)
    assert p.read_bytes() == good and reg.load(v1.id)["w"].shape == (64,) and reg.load(v2.id)
    hostile("a stored blob truncated")
    os.chmod(p, 0o644)
    p.write_bytes(good[:10])
    reg.register("m", f)
    assert p.read_bytes() == good and stat.S_IMODE(p.stat().st_mode) & 0o222 == 0


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 4}))
    st_file(d / "model.safetensors", {"w": np.ones((2, 2), dtype=np.float32)})
    secret = tmp_path / "home" / ".ssh"
    secret.mkdir(parents=True)
    (secret / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY----- not for the store")
    return d


LINKS = [  # (name in the folder, target, what the error names)
    ("leak.txt", "{tmp}/home/.ssh/id_rsa", "leak.txt is a symbolic link to {tmp}/home/.ssh/id_rsa, outside"),
    ("env", "/proc/self/environ", "env is a symbolic link to /proc/"),
    ("ssh", "{tmp}/home/.ssh", "ssh is a symbolic link to {tmp}/home/.ssh, outside"),
    ("sub/deep.json", "../../home/.ssh/id_rsa", "deep.json is a symbolic link to {tmp}/home/.ssh/id_rsa, outside"),
    ("loop", ".", "loop links back to"),
]


@pytest.mark.hostile
@pytest.mark.parametrize("name,target,words", LINKS, ids=[n for n, _, _ in LINKS])
def test_links_out_of_a_model_folder_are_refused(model_dir, tmp_path, name, target, words, hostile):
    reg = Registry(log=False)
    before = stored(reg.ws)
    link = model_dir / name
    link.parent.mkdir(exist_ok=True)
    hostile(f"a model folder holding a link {name} -> {target}")
    link.symlink_to(target.format(tmp=tmp_path))
    with pytest.raises(ValidationError) as e:
        reg.register("m", model_dir)
    msg = str(e.value)
    assert words.format(tmp=tmp_path) in msg, msg
    if "outside" in words: assert "copy the file into the folder" in msg
    assert stored(reg.ws) == before
    r = fmops("registry", "register", "m", str(model_dir), "--no-wandb")
    assert r.returncode == 1 and r.stderr.startswith("fmops: error:") and name.split("/")[-1] in r.stderr
    assert stored(reg.ws) == before


@pytest.mark.hostile
def test_config_json_linked_out_of_the_folder_is_refused(model_dir, tmp_path, hostile):
    reg = Registry(log=False)
    before = stored(reg.ws)
    (tmp_path / "elsewhere.json").write_text("{}")
    hostile("config.json a link to a file outside the folder")
    (model_dir / "config.json").unlink()
    (model_dir / "config.json").symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(ValidationError, match="config.json is a symbolic link to .*elsewhere.json, outside"):
        reg.register("m", model_dir)
    hostile("a named pipe in the folder")
    (model_dir / "config.json").unlink()
    (model_dir / "config.json").write_text("{}")
    os.mkfifo(model_dir / "pipe")
    with pytest.raises(ValidationError, match="pipe is not a regular file"):
        reg.register("m", model_dir)
    hostile("config.json that is a JSON list")
    (model_dir / "pipe").unlink()
    (model_dir / "config.json").write_text("[1, 2]")
    with pytest.raises(ValidationError, match="config.json holds a JSON list, not an object"):
        reg.register("m", model_dir)
    assert stored(reg.ws) == before


def test_links_inside_the_folder_are_stored_as_files(model_dir, tmp_path):
    (model_dir / "shared").mkdir()
    (model_dir / "shared" / "vocab.txt").write_text("a\nb\n")
    (model_dir / "tokenizer").symlink_to("shared")
    (model_dir / "tokenizer_config.json").symlink_to(model_dir / "config.json")
    got = safe_files(model_dir)
    assert sorted(got) == ["config.json", "model.safetensors", "shared/vocab.txt", "tokenizer/vocab.txt",
                           "tokenizer_config.json"]
    assert got["tokenizer/vocab.txt"] == (model_dir / "shared" / "vocab.txt").resolve()
    reg = Registry(log=False)
    v = reg.register("m", model_dir)
    out = reg.export(v.id, tmp_path / "out")
    assert not any(p.is_symlink() for p in out.rglob("*"))
    assert (out / "tokenizer" / "vocab.txt").read_text() == "a\nb\n"
    assert (out / "tokenizer_config.json").read_text() == (model_dir / "config.json").read_text()
    secret = (tmp_path / "home" / ".ssh" / "id_rsa").read_bytes()
    assert not any(secret in p.read_bytes() for p in reg.ws.blobs_dir.rglob("*") if p.is_file())


def _bad_headers(tmp):
    f32 = lambda shape, b, e: {"dtype": "F32", "shape": shape, "data_offsets": [b, e]}
    one = b'"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}'
    (tmp / "s.safetensors").write_bytes(b"\x01\x02")
    return [  # (what, path, words the error must hold)
        ("list header", raw_st(tmp / "a.safetensors", [1, 2]),
         "its header is a JSON list, not an object naming tensors"),
        ("tensor not an object", raw_st(tmp / "b.safetensors", {"w": [0, 4]}),
         "tensor 'w' is described by a JSON list"),
        ("dict without keys", raw_st(tmp / "c.safetensors", {"w": {"dtype": "F32"}}),
         "tensor 'w' has no shape or data_offsets"),
        ("unknown dtype", raw_st(tmp / "d.safetensors", {"w": {**f32([4], 0, 4), "dtype": "F8_E4M3"}}, bytes(4)),
         "tensor 'w' has dtype 'F8_E4M3', which fmops cannot read"),
        ("negative shape", raw_st(tmp / "e.safetensors", {"w": f32([-1, 2], 0, 8)}, bytes(8)),
         "tensor 'w' has shape [-1, 2]"),
        ("bool in shape", raw_st(tmp / "f.safetensors", {"w": f32([True], 0, 4)}, bytes(4)),
         "tensor 'w' has shape [True]"),
        ("offsets reversed", raw_st(tmp / "g.safetensors", {"w": f32([1], 4, 0)}, bytes(4)),
         "tensor 'w' has data_offsets [4, 0]"),
        ("offsets out of bounds", raw_st(tmp / "h.safetensors", {"w": f32([1000], 0, 4000)}, bytes(16)),
         "tensor 'w' ends at byte"),
        ("overlapping", raw_st(tmp / "i.safetensors", {"a": f32([2], 0, 8), "b": f32([2], 4, 12)}, bytes(12)),
         "tensor 'b' overlaps tensor 'a'"),
        ("hole", raw_st(tmp / "j.safetensors", {"a": f32([2], 0, 8), "b": f32([2], 12, 20)}, bytes(20)),
         "4 bytes before tensor 'b' belong to no tensor (a hole)"),
        ("length mismatch", raw_st(tmp / "k.safetensors", {"w": f32([3], 0, 8)}, bytes(8)),
         "tensor 'w' (F32, shape [3]) takes 12 bytes, but its data_offsets span 8"),
        ("bytes after the last tensor", raw_st(tmp / "l.safetensors", {"w": f32([1], 0, 4)}, bytes(12)),
         "8 bytes after the last tensor ('w') belong to no tensor"),
        ("huge header length", raw_st(tmp / "m.safetensors", {"w": f32([1], 0, 4)}, bytes(4), n=1 << 40),
         "header length 1,099,511,627,776 is over the format's 100 MiB limit"),
        ("header length past the end", raw_st(tmp / "n.safetensors", {"w": f32([1], 0, 4)}, b"", n=5000),
         "its header length 5,000 runs past the end of the file"),
        ("duplicate tensor name", raw_st(tmp / "o.safetensors", b"{" + one + b", " + one + b"}", bytes(4)),
         "it names 'w' twice"),
        ("metadata not strings", raw_st(tmp / "p.safetensors", {"__metadata__": {"epoch": 3}, "w": f32([1], 0, 4)},
                                        bytes(4)), "its __metadata__ is not an object of strings"),
        ("not JSON", raw_st(tmp / "q.safetensors", b'{"a": nonsense}'), "its header is not valid JSON"),
        ("NaN in the header", raw_st(tmp / "r.safetensors", b'{"w": NaN}'), "its header is not valid JSON"),
        ("too short", tmp / "s.safetensors", "too short to hold the 8-byte header length"),
    ]


@pytest.mark.hostile
def test_lying_safetensors_headers_are_refused_with_the_tensor_named(tmp_path, hostile):
    reg = Registry(log=False)
    reg.register("m", st_file(tmp_path / "ok.safetensors", {"w": np.ones(4, dtype=np.float32)}))
    before = stored(reg.ws)
    good = st_file(tmp_path / "big.safetensors", {f"t{i}": np.full((8, 8), i, dtype=np.float32) for i in range(6)})
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    cases = _bad_headers(tmp_path) + [("truncated file", truncated, "ends at byte")]
    for what, path, words in cases:
        hostile(f"safetensors: {what}")
        with pytest.raises(ValidationError) as e:
            reg.register("m", path)
        assert words in str(e.value) and str(path) in str(e.value), (what, str(e.value))
        assert stored(reg.ws) == before, what
    hostile("an HF folder whose second weights file lies, beside a good one")
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text("{}")
    shutil.copy(good, d / "model-00001-of-00002.safetensors")
    shutil.copy(tmp_path / "i.safetensors", d / "model-00002-of-00002.safetensors")
    with pytest.raises(ValidationError, match="tensor 'b' overlaps tensor 'a'"):
        reg.register("m", d)
    assert stored(reg.ws) == before  # checked before any blob was written
    r = fmops("registry", "register", "m", str(tmp_path / "a.safetensors"), "--no-wandb")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "its header is a JSON list" in r.stderr


@pytest.mark.hostile
def test_non_finite_metrics_are_refused(tmp_path, hostile):
    reg = Registry(log=False)
    f = st_file(tmp_path / "w.safetensors", {"w": np.ones(4, dtype=np.float32)})
    before = stored(reg.ws)
    for bad in (float("nan"), float("inf"), "-inf", (float("nan"), "lower"), {"value": "nan"}):
        hostile(f"metric value {bad!r}")
        with pytest.raises(ValidationError, match="is not a finite number. Record a real measurement, or leave"):
            reg.register("m", f, metrics={"accuracy": bad})
    hostile("--metric accuracy=nan on the command line")
    r = fmops("registry", "register", "m", str(f), "--metric", "accuracy=nan", "--no-wandb")
    assert r.returncode == 1 and "is not a finite number" in r.stderr
    assert stored(reg.ws) == before


PERMS = textwrap.dedent(r"""
    import json, os, stat, sys, numpy as np
    os.umask(int(sys.argv[1], 8))
    from fmops_nb.core import Workspace, atomic_write
    from fmops_nb.registry import Registry
    from safetensors.numpy import save_file
    ws = Workspace.open(sys.argv[2])
    reg = Registry(ws, log=False)
    save_file({'w': np.ones(4, dtype=np.float32)}, 'w.safetensors')
    os.chmod('w.safetensors', 0o666 & ~int(sys.argv[1], 8))  # as open() makes it (safetensors writes owner-only)
    v = reg.register('m', 'w.safetensors')
    report = atomic_write(ws.reports_dir / 'demo' / 'report.html', '<p>report</p>')
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)
    blobs = sorted({mode(p) for p in ws.blobs_dir.rglob('*') if p.is_file()})
    print(json.dumps({'blobs': blobs, 'report': mode(report), 'anchor': mode(ws.anchor_path),
                      'config': mode(ws.config_path), 'db': mode(ws.db_path)}))
""")


@pytest.mark.parametrize("umask", ["022", "077"])
def test_one_permission_policy_for_blobs_and_reports(tmp_path, umask):
    r = subprocess.run([sys.executable, "-c", PERMS, umask, str(tmp_path / "ws")], capture_output=True, text=True,
                       cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    got, u = json.loads(r.stdout), int(umask, 8)
    files = 0o666 & ~u
    assert got == {"blobs": [files & ~0o222], "report": files, "anchor": files, "config": files, "db": files}, got


# ---------------------------------------------------------------- 8. clear errors, quiet pipes, read-only workspaces

@pytest.mark.hostile
@pytest.mark.slow
def test_wandb_failure_after_registration_is_a_warning_with_the_retry(tmp_path, isolated_workspace, hostile):
    f = st_file(tmp_path / "w.safetensors", {"w": np.ones(4, dtype=np.float32)})
    assert fmops("workspace", "--init").returncode == 0
    cache = isolated_workspace / "wandb" / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    hostile("W&B cannot write its cache folder (a file is in the way)")
    cache.write_text("not a folder")
    r = fmops("registry", "register", "m", str(f), "--metric", "accuracy=0.9")
    assert r.returncode == 0, r.stderr
    assert "Registered m:v1" in r.stdout
    warn = [l for l in r.stderr.splitlines() if l.startswith("fmops: warning:")]
    assert len(warn) == 1 and warn[0].startswith("fmops: warning: registered m:v1; logging it to W&B failed:")
    assert warn[0].endswith("Retry with `fmops registry log m:v1`."), warn
    assert "Traceback" not in r.stderr
    reg = Registry(log=False)
    assert [v.id for v in reg.versions("m")] == ["m:v1"] and verify_audit(reg.ws).ok
    r = fmops("registry", "log", "m:v1")  # still broken: a clear error
    assert r.returncode == 1 and "fmops: error: Logging m:v1 to W&B failed" in r.stderr and "Traceback" not in r.stderr
    cache.unlink()
    r = fmops("registry", "log", "m:v1")
    assert r.returncode == 0, r.stderr
    from fmops_nb.tracking import read_run
    rec = read_run(r.stdout.strip().rsplit(": ", 1)[1])
    (art,) = [a for a in rec.artifacts if a["type"] == "model"]
    assert rec.status == "finished" and art["name"] == "m" and sorted(art["aliases"]) == ["latest", "v1"]
    assert rec.audit_head["seq"] == 1


def test_wandb_failure_in_the_api_is_a_tracking_warning(monkeypatch, tmp_path):
    reg = Registry(log=True)
    monkeypatch.setenv("WANDB_MODE", "offline")
    import fmops_nb.tracking as T
    monkeypatch.setattr(T, "_mode", "bogus")  # what a broken W&B setup does to wandb.init, without waiting for it
    with pytest.warns(TrackingWarning, match=r"^registered m:v1; logging it to W&B failed: Could not start a W&B run "
                                             r"in bogus mode: "
                                             r"[^\n]*Retry with `fmops registry log m:v1`\.$"):
        v = reg.register("m", st_file(tmp_path / "w.safetensors", {"w": np.ones(4, dtype=np.float32)}))
    assert reg.get("m:v1").id == v.id


@pytest.mark.slow
def test_output_piped_into_head_exits_quietly(tmp_path):
    import torch
    torch.set_num_threads(1)
    reg = Registry(log=False)
    for i in range(60):  # ~1.2 MB of JSON: far more than a pipe holds, so fmops is still writing when the reader leaves
        reg.register("m", {"w": torch.full((2,), float(i))}, metrics={"accuracy": i / 100}, description="x" * 20000)
    # the reader goes away at once: every write fails with EPIPE
    p = subprocess.Popen([*FMOPS, "registry", "ls", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=300) == 1 and err == "", err
    # and the shell pipeline users write: more output than the pipe holds
    r = subprocess.run(["bash", "-c", "fmops registry ls --json | head -1; echo \"status ${PIPESTATUS[0]}\""],
                       capture_output=True, text=True, timeout=300)
    assert r.stdout == "[\nstatus 1\n" and r.stderr == "", (r.stdout[-200:], r.stderr)


def _setpriv():
    for tool in ("setpriv", "runuser"):
        if shutil.which(tool):
            if tool == "setpriv": return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            return ["runuser", "-u", "nobody", "--"]
    return None


@pytest.mark.hostile
@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or _setpriv() is None,
                    reason="needs root and setpriv or runuser to act as an unprivileged user")
def test_read_only_workspace_can_still_be_read(tmp_path, hostile):
    base = Path(tempfile.mkdtemp(prefix="fmops-ro-", dir="/tmp"))  # tmp_path is private to root; this folder is not
    try:
        os.chmod(base, 0o755)
        ws = base / ".fmops"
        reg = Registry(Workspace.open(ws), log=False)
        import torch
        reg.register("m", {"w": torch.zeros(3, 3)}, metrics={"accuracy": 0.8}, aliases=["production"])
        reg.register("m", {"w": torch.eye(3)}, parent="m:v1", metrics={"accuracy": 0.9})
        del reg
        for p in [ws, *ws.rglob("*")]:  # readable by everyone, writable by root only
            os.chmod(p, 0o755 if p.is_dir() else stat.S_IMODE(p.stat().st_mode) & 0o644 | 0o444)
        before = files_of(ws)
        hostile("a workspace the user can read but not write")
        env = {"FMOPS_HOME": str(ws), "HOME": "/nonexistent", "WANDB_MODE": "disabled"}
        nobody = _setpriv()
        for args, words in ((("registry", "ls"), "m:v2"), (("registry", "show", "m:production"), "m:v1 [production]"),
                            (("diff", "m:v1", "m:v2"), "m:v1 → m:v2: 1 of 1 tensors changed"),
                            (("audit", "verify"), "Audit log: 3 rows, chain intact."), (("audit", "show"), "register")):
            r = fmops(*args, env=env, prefix=nobody, cwd="/")
            assert r.returncode == 0 and words in r.stdout, (args, r.stdout, r.stderr)
        r = fmops("registry", "promote", "m:v2", "--no-wandb", env=env, prefix=nobody, cwd="/")
        assert r.returncode == 1 and "is read-only for this user" in r.stderr and "Traceback" not in r.stderr, r.stderr
        r = fmops("registry", "gc", env=env, prefix=nobody, cwd="/")
        assert r.returncode == 1 and "is read-only for this user" in r.stderr, r.stderr
        assert files_of(ws) == before  # nothing written, not even a WAL file
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.hostile
def test_terminal_escapes_in_stored_names_are_not_replayed_to_the_terminal(monkeypatch, hostile):
    hostile("FMOPS_USER holding terminal escape sequences")
    monkeypatch.setenv("FMOPS_USER", "eve\x1b]0;owned\x07\x1b[2J")
    small_registry()
    for cmd in (("registry", "ls"), ("registry", "show", "m:v1"), ("registry", "show", "m:v1", "--card"),
                ("audit", "show")):
        r = fmops(*cmd)
        assert r.returncode == 0 and "\x1b" not in r.stdout and "\x07" not in r.stdout, cmd
        assert "eve\\x1b]0;owned\\x07" in r.stdout, (cmd, r.stdout)  # shown as escapes, not obeyed


# ------------------------------------------------------------ wave 2: the registry acts only on what the log explains

GATE = ('[[monitor.policies]]\nname = "no-worse"\non = "promote"\nwhen = "candidate.accuracy < current.accuracy"\n'
        'action = "block"\n')


def weights(tmp_path, name: str, value: float) -> Path:
    "A small safetensors file (two tensors, both holding `value`), written without torch."
    return st_file(tmp_path / f"{name}.safetensors", {"w": np.full((4, 4), value, dtype=np.float32),
                                                      "b": np.full(4, value, dtype=np.float32)})


def problems_of(ws) -> str:
    return "\n".join(verify_audit(ws).problems)


@pytest.mark.slow
@pytest.mark.hostile
def test_a_metric_edited_behind_the_registrys_back_cannot_pass_a_gate(monkeypatch, tmp_path, hostile):
    from fmops_nb.monitor import PromotionBlocked
    monkeypatch.setenv("FMOPS_AUDIT_KEY", KEY)
    reg = Registry(log=False)
    reg.ws.config_path.write_text(GATE)
    reg.ws.reload()
    reg.register("a", weights(tmp_path, "m1", 1), metrics={"accuracy": 0.9}, aliases=["production"])
    reg.register("a", weights(tmp_path, "m2", 2), metrics={"accuracy": 0.5}, description="the candidate")
    with pytest.raises(PromotionBlocked, match="no-worse"):
        reg.promote("a:v2")
    assert verify_audit(reg.ws).ok
    with raw_db(reg.ws) as con:
        orig = con.execute("SELECT * FROM versions WHERE id='a:v2'").fetchone()
        cols = [d[0] for d in con.execute("SELECT * FROM versions LIMIT 0").description]

    def meta_with(**change):
        meta = json.loads(orig[cols.index("meta")])
        for k, v in change.items():
            if k == "accuracy": meta["metrics"]["accuracy"]["value"] = v
            elif k == "direction": meta["metrics"]["accuracy"]["direction"] = v
            else: meta[k] = v
        return json.dumps(meta, sort_keys=True)
    v1_card = reg.get("a:v1").card
    cases = [  # (what is tried, column, new value, the words verify names it with)
        ("versions.meta: the candidate's accuracy raised from 0.5 to 0.99", "meta", meta_with(accuracy=0.99),
         "version a:v2's metrics differ from those the audit log (row 3) registered: accuracy 0.99 (registered 0.5)"),
        ("versions.meta: the accuracy's direction flipped to lower-is-better", "meta", meta_with(direction="lower"),
         "version a:v2's recorded details (metric directions, description, tags, data, config) are not those "
         "registered (row 3)"),
        ("versions.meta: the description rewritten", "meta", meta_with(description="approved by QA"),
         "version a:v2's recorded details (metric directions, description"),
        ("versions.parent set to a:v1", "parent", "a:v1",
         "version a:v2's parent is 'a:v1', but the audit log (row 3) registered it with None"),
        ("versions.base set to a:v1", "base", "a:v1", "version a:v2's base is 'a:v1', but the audit log (row 3)"),
        ("versions.format changed to peft", "format", "peft", "version a:v2's format is 'peft', but the audit log"),
        ("versions.created_by changed", "created_by", "mallory",
         "version a:v2 is recorded as registered by 'mallory', but the audit log (row 3) says"),
        ("versions.card swapped for a:v1's", "card", v1_card, "version a:v2's model card is not the one registered"),
        ("versions.number changed", "number", 7, "version a:v2's model or number (a, 7) do not match its id"),
    ]
    for what, col, value, words in cases:
        hostile(what)
        with raw_db(reg.ws) as con:
            con.execute(f"UPDATE versions SET {col}=? WHERE id='a:v2'", (value,))
        before = stored(reg.ws)
        assert words in problems_of(reg.ws), (what, problems_of(reg.ws))
        with pytest.raises(WorkspaceError, match=r"promote a:v2 to a:production was refused: `fmops audit verify` "
                                                 r"finds \d+ problem\(s\) in the records it acts on"):
            reg.promote("a:v2")
        assert stored(reg.ws) == before, what  # nothing moved, not even a promote-blocked row
        with raw_db(reg.ws) as con:
            con.execute(f"UPDATE versions SET {col}=? WHERE id='a:v2'", (orig[cols.index(col)],))
    with raw_db(reg.ws) as con:
        con.execute("UPDATE versions SET meta=? WHERE id='a:v2'", (meta_with(accuracy=0.99),))
    before = stored(reg.ws)
    r = fmops("registry", "promote", "a:v2", "--no-wandb")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "was refused" in r.stderr and "accuracy 0.99 (registered 0.5)" in r.stderr
    assert "See `fmops audit verify`; restore fmops.db from a backup" in r.stderr
    r = fmops("audit", "verify")
    assert r.returncode == 1 and "accuracy 0.99 (registered 0.5)" in r.stdout
    assert stored(reg.ws) == before
    with raw_db(reg.ws) as con:
        con.execute("UPDATE versions SET meta=? WHERE id='a:v2'", (orig[cols.index("meta")],))
    assert verify_audit(reg.ws).ok
    with pytest.raises(PromotionBlocked, match="no-worse"):  # the gate sees the registered 0.5 again
        reg.promote("a:v2")


def _three_and_a_promotion(tmp_path, model="h") -> Registry:
    reg = Registry(log=False)
    for i in (1, 2, 3):
        reg.register(model, weights(tmp_path, f"{model}{i}", i), aliases=["production"] if i == 1 else ())
    reg.promote(f"{model}:v2")
    return reg


@pytest.mark.slow
@pytest.mark.hostile
def test_an_edited_alias_history_cannot_steer_a_rollback(tmp_path, hostile):
    reg = _three_and_a_promotion(tmp_path)
    assert verify_audit(reg.ws).ok
    with raw_db(reg.ws) as con:
        rows = con.execute("SELECT * FROM alias_history ORDER BY seq").fetchall()
    cases = [
        ("alias_history: the first move of h:production pointed at the untested h:v3",
         ["UPDATE alias_history SET version='h:v3' WHERE seq=1"],
         "alias_history row 1 (move 1 of h:production) has version 'h:v3' where the audit log (row 2) has 'h:v1'"),
        ("alias_history: a move's reason rewritten", ["UPDATE alias_history SET reason='tested' WHERE seq=2"],
         "alias_history row 2 (move 2 of h:production) has reason 'tested' where the audit log (row 5) has ''"),
        ("alias_history: the last move deleted", ["DELETE FROM alias_history WHERE seq=2"],
         "alias h:production's history holds 1 move(s), but the audit log records 2: moves were deleted"),
        ("alias_history: a move inserted", ["INSERT INTO alias_history (model, alias, version, previous, action, "
                                            "reason, at, by) VALUES ('h', 'production', 'h:v3', 'h:v2', 'promote', '', "
                                            "'2026-01-01', 'mallory')"],
         "alias h:production's history holds 3 move(s), but the audit log records 2: moves were added"),
        ("alias_history: a move for an alias the log never set", ["INSERT INTO alias_history (model, alias, version, "
                                                                   "previous, action, reason, at, by) VALUES ('h', "
                                                                   "'staging', 'h:v3', NULL, 'promote', '', "
                                                                   "'2026-01-01', 'mallory')"],
         "alias h:staging's history holds 1 move(s), but the audit log records 0: moves were added"),
    ]
    for what, sqls, words in cases:
        hostile(what)
        with raw_db(reg.ws) as con:
            for q in sqls: con.execute(q)
        before = stored(reg.ws)
        assert words in problems_of(reg.ws), (what, problems_of(reg.ws))
        with pytest.raises(WorkspaceError, match="rollback of h:production was refused"):
            reg.rollback("h:production")
        r = fmops("registry", "rollback", "h:production", "--no-wandb")
        assert r.returncode == 1 and "was refused" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert stored(reg.ws) == before and reg.get("h:production").id == "h:v2", what
        with raw_db(reg.ws) as con:  # put the history back as the registry wrote it
            con.execute("DELETE FROM alias_history")
            con.executemany("INSERT INTO alias_history VALUES (?,?,?,?,?,?,?,?,?)", rows)
    assert verify_audit(reg.ws).ok
    assert reg.rollback("h:production").id == "h:v1"  # the tested version, as the log says


@pytest.mark.hostile
def test_tensor_hashes_edited_behind_the_registrys_back_are_named(tmp_path, hostile):
    from fmops_nb.diff import diff
    reg = Registry(log=False)
    reg.register("h", weights(tmp_path, "h1", 1))
    reg.register("h", weights(tmp_path, "h2", 2))
    assert diff("h:v1", "h:v2", reg).cost["tensors"] == 2
    hostile("tensors.sha256 of h:v2 copied from h:v1 (a diff would call them unchanged)")
    with raw_db(reg.ws) as con:
        con.execute("UPDATE tensors SET sha256=(SELECT t.sha256 FROM tensors t WHERE t.version='h:v1' AND "
                    "t.name=tensors.name) WHERE version='h:v2'")
    before = stored(reg.ws)
    words = "the tensor records of h:v2 in the database are not those of its manifest"
    assert words in problems_of(reg.ws)
    with pytest.raises(WorkspaceError, match=words + r": they were changed behind the registry's back"):
        diff("h:v1", "h:v2", reg)
    r = fmops("diff", "h:v1", "h:v2")
    assert r.returncode == 1 and words in r.stderr and "0 of 2" not in r.stdout, (r.stdout, r.stderr)
    hostile("a tensor row deleted")
    with raw_db(reg.ws) as con:
        con.execute("DELETE FROM tensors WHERE version='h:v1' AND name='b'")
    assert "the tensor records of h:v1 in the database are not those of its manifest" in problems_of(reg.ws)
    assert stored(reg.ws)["blobs"] == before["blobs"]


@pytest.mark.hostile
def test_verify_says_what_older_register_rows_cannot_prove(tmp_path, hostile):
    reg = Registry(log=False)
    reg.register("o", weights(tmp_path, "o1", 1), metrics={"accuracy": 0.7}, aliases=["production"])
    reg.register("o", weights(tmp_path, "o2", 2), parent="o:production", metrics={"accuracy": 0.8})
    with raw_db(reg.ws) as con:  # the register rows as fmops wrote them before they carried a version's details
        for seq, after in con.execute("SELECT seq, after FROM audit WHERE action='register'").fetchall():
            a = json.loads(after)
            old = {k: a[k] for k in ("format", "parent", "base", "manifest", "metrics")}
            if a["parent"]: old["parent"] = "o:production"  # an older row kept the reference as it was given
            con.execute("UPDATE audit SET after=? WHERE seq=?", (json.dumps(old, sort_keys=True), seq))
        rechain(con)
        seq, h = con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    reg.ws.anchor_path.write_text(json.dumps({"rows": seq, "seq": seq, "hash": h, "at": "2026-12-01T00:00:00Z"}))
    c = verify_audit(reg.ws)
    assert c.ok, c
    note = ("2 version(s) (o:v1, o:v2) were registered before register rows carried a version's details: for them "
            "verify checks the manifest, metrics, format and author, and the parent and base where the row names a "
            "version; not metric directions, description, tags, data, config, card or time")
    assert note in c.notes, c.notes
    hostile("the accuracy of a version registered by an older fmops raised with SQL")
    with raw_db(reg.ws) as con:
        meta = json.loads(con.execute("SELECT meta FROM versions WHERE id='o:v2'").fetchone()[0])
        meta["metrics"]["accuracy"]["value"] = 0.95
        con.execute("UPDATE versions SET meta=? WHERE id='o:v2'", (json.dumps(meta),))
    assert "version o:v2's metrics differ from those the audit log (row 3) registered" in problems_of(reg.ws)


@pytest.mark.hostile
@pytest.mark.slow
def test_a_cut_back_to_an_old_anchor_shows_against_the_newest_wandb_run(monkeypatch, tmp_path, hostile):
    from fmops_nb.tracking import find_runs
    monkeypatch.setenv("FMOPS_AUDIT_KEY", KEY)
    reg = Registry(log=True)  # each registration and alias move is a W&B run that records the log's head
    reg.register("a", weights(tmp_path, "a1", 1), aliases=["production"])
    reg.register("a", weights(tmp_path, "a2", 2))
    old_anchor = reg.ws.anchor_path.read_bytes()
    reg.promote("a:v2")
    newest = find_runs(reg.ws)[-1].name
    hostile("the promotion cut from the log (rows, counter, alias, history) and the old, validly keyed anchor put back")
    with raw_db(reg.ws) as con:
        for q in ("DELETE FROM audit WHERE seq>3", "UPDATE sqlite_sequence SET seq=3 WHERE name='audit'",
                  "UPDATE aliases SET version='a:v1'", "DELETE FROM alias_history WHERE seq>1"):
            con.execute(q)
    reg.ws.anchor_path.write_bytes(old_anchor)
    before = stored(reg.ws)
    c = verify_audit(reg.ws)  # by default: the anchor and the newest W&B runs
    assert c.anchor.endswith(": matches the log"), c  # the anchor alone cannot tell ...
    cut = f"the W&B run {newest} recorded the log's head at row 4, and the log has no such row now: rows were cut"
    assert cut in c.problems, c  # ... the newest W&B run can
    assert c.freshness.startswith(f"The anchor {reg.ws.anchor_path} is inside the workspace"), c.freshness
    assert ("a cut back to an older anchor shows only against a head kept elsewhere: an anchor outside the workspace "
            "(audit.anchor_file) or W&B runs synced off this machine") in c.freshness
    r = fmops("audit", "verify")
    assert r.returncode == 1 and cut in r.stdout and "Freshness: The anchor" in r.stdout, r.stdout
    with pytest.raises(WorkspaceError, match="promote a:v2 to a:production was refused.*rows were cut"):
        reg.promote("a:v2")
    assert stored(reg.ws) == before
    hostile("the same cut, with the local W&B runs deleted too")
    shutil.rmtree(reg.ws.root / "wandb")
    c = verify_audit(reg.ws)
    assert c.ok and "a cut back to an older anchor shows only against a head kept elsewhere" in c.freshness, c


def test_verify_says_which_heads_it_checked(tmp_path):
    reg = Registry(log=False)
    reg.register("a", weights(tmp_path, "a1", 1))
    outside = tmp_path / "elsewhere" / "head.json"
    reg.ws.config_path.write_text(f'[audit]\nanchor_file = "{outside}"\n')
    reanchor_audit(Workspace.open(), "anchor kept outside the workspace")
    c = verify_audit(Workspace.open())
    assert c.ok and c.freshness.startswith(f"The anchor {outside} is outside the workspace: a cut back to an older "
                                           f"log shows against it"), c.freshness
    assert "no local W&B run carries an audit head" in "\n".join(c.notes), c.notes


# ---------------------------------------------------------------- wave 2: the store never widens a file's permissions

@pytest.mark.hostile
def test_a_private_file_stays_private_in_the_store(model_dir, tmp_path, hostile):
    from fmops_nb.core import file_mode
    from fmops_nb.errors import StoreWarning
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    os.chmod(secret, 0o600)
    hostile("a hard link to a 0600 file inside the model folder")
    os.link(secret, model_dir / "notes.txt")
    reg = Registry(log=False)
    with pytest.warns(StoreWarning, match=r"^registered hl:v1; notes.txt has other hard links and only its owner may "
                                          r"read it: .*stored owner-only, as its source"):
        v = reg.register("hl", model_dir)
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)
    assert mode(reg.blobs.path(v.files["notes.txt"]["sha256"])) == 0o400  # never more than the source: owner-only
    for rel in ("config.json", "model.safetensors"):
        assert mode(reg.blobs.path(v.files[rel]["sha256"])) == file_mode(False) & mode(model_dir / rel)
    assert mode(reg.blobs.path(v.manifest)) == file_mode(False) & mode(model_dir / "config.json")
    r = fmops("registry", "register", "hl", str(model_dir), "--no-wandb")
    assert r.returncode == 0 and r.stderr.startswith("fmops: warning: registered hl:v2; notes.txt has other hard "
                                                      "links"), r.stderr

    hostile("a 0600 config.json: the manifest holding its content")
    os.unlink(model_dir / "notes.txt")
    os.chmod(model_dir / "config.json", 0o600)
    (model_dir / "config.json").write_text(json.dumps({"model_type": "bert", "api_token": "hunter2"}))
    v = reg.register("hl", model_dir)
    assert mode(reg.blobs.path(v.files["config.json"]["sha256"])) == 0o400
    assert mode(reg.blobs.path(v.manifest)) == 0o400 and b"hunter2" in reg.blobs.path(v.manifest).read_bytes()

    hostile("the same bytes stored earlier from a world-readable copy, then registered from a 0600 file")
    public = tmp_path / "public.safetensors"
    st_file(public, {"w": np.arange(8, dtype=np.float32)})
    os.chmod(public, 0o644)
    v = reg.register("same", public)
    blob = reg.blobs.path(v.files["model.safetensors"]["sha256"])
    assert mode(blob) == file_mode(False) & 0o644
    private = tmp_path / "private.safetensors"
    shutil.copy(public, private)
    os.chmod(private, 0o600)
    reg.register("same", private)
    # content already stored keeps its mode: whoever may read it could read it before, and narrowing it would cut
    # them off the version they registered
    assert mode(blob) == file_mode(False) & 0o644
    assert reg.load("same:v2")["w"].tolist() == list(range(8))
    assert verify_audit(reg.ws).ok


def test_hard_links_readable_by_everyone_are_stored_quietly(model_dir, tmp_path):
    import warnings
    shared = tmp_path / "cache" / "vocab.txt"  # how uv and pip caches hard-link files into an install
    shared.parent.mkdir()
    shared.write_text("a\nb\n")
    os.chmod(shared, 0o644)
    os.link(shared, model_dir / "vocab.txt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = Registry(log=False).register("m", model_dir)
    assert "vocab.txt" in v.files


# ---------------------------------------------------------------- wave 2: what a version needs stays

def adapter_dir(tmp_path) -> Path:
    "A PEFT LoRA adapter folder on the module 'layer' (written without peft)."
    d = tmp_path / "adapter"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
                                                       "target_modules": ["layer"]}))
    st_file(d / "adapter_model.safetensors", {"base_model.model.layer.lora_A.weight": np.ones((2, 4), np.float32),
                                              "base_model.model.layer.lora_B.weight": np.ones((4, 2), np.float32)})
    return d


@pytest.mark.hostile
def test_an_adapters_base_cannot_be_deleted_and_gc_keeps_it(tmp_path, hostile):
    from fmops_nb.diff import diff
    from fmops_nb.audit import append_audit
    reg = Registry(log=False)
    base = reg.register("p", st_file(tmp_path / "base.safetensors", {"layer.weight": np.eye(4, dtype=np.float32),
                                                                      "layer.bias": np.zeros(4, np.float32)}))
    ad = reg.register("p", adapter_dir(tmp_path), base="p:v1", aliases=["production"])
    before = stored(reg.ws)
    hostile("deleting the base of an adapter in production")
    with pytest.raises(ValidationError, match=r"^p:v1 is the base of the adapter p:v2, which cannot be used without "
                                              r"it: delete p:v2 first, or keep p:v1\.$"):
        reg.delete("p:v1")
    assert stored(reg.ws) == before
    assert reg.gc(grace_s=0)["blobs_removed"] == 0
    lora = diff("p:v2", "p:v2", reg).lora["p:v2"]
    assert lora[0]["module"] == "layer" and lora[0]["rel_delta"] == pytest.approx(16 / 2)  # ‖(4/2)·B·A‖ / ‖I‖

    hostile("a base deleted by an older fmops (an audited deletion), then gc")
    with reg.ws.transaction() as con:
        con.execute("UPDATE versions SET state='deleted' WHERE id='p:v1'")
        append_audit(con, "delete", "p:v1", {"state": "ready"}, {"state": "deleted"})
    assert verify_audit(reg.ws).ok
    assert reg.gc(grace_s=0)["blobs_removed"] == 0  # the adapter still needs its base's weights
    assert all(reg.blobs.verify(f["sha256"]) for f in base.files.values())
    assert diff("p:v2", "p:v2", reg).lora["p:v2"][0]["rel_delta"] == pytest.approx(8.0)
    reg.register("p", weights(tmp_path, "full", 3), aliases=["production"], check_names=False)
    reg.delete("p:v2")  # once nothing needs the base, gc frees it with the adapter
    gone = {f["sha256"] for v in (base, ad) for f in v.files.values()} | {base.manifest, base.card, ad.manifest,
                                                                          ad.card}
    assert reg.gc(grace_s=0)["blobs_removed"] == len(gone) == 7  # 1 + 2 files, and a manifest and a card each
    assert not any(sha in reg.blobs for sha in gone) and reg.load("p:v3")


# ---------------------------------------------------------------- wave 2: a malformed setting is a ConfigError

BAD_SETTINGS = [  # (config.toml, what is tried, the words the error must hold)
    ('[monitor]\nwebhook_url = "http://[::1"\n', "webhook_url with an unclosed IPv6 bracket",
     "Setting 'monitor.webhook_url' in {cf} is not a valid URL (Invalid IPv6 URL)"),
    ('[monitor]\nwebhook_url = "http://example.com:99999/hook"\n', "webhook_url with a port out of range",
     "Setting 'monitor.webhook_url' in {cf} has an invalid port"),
    ('[monitor]\nwebhook_url = "http://example.com/a b"\n', "webhook_url with a space",
     "Setting 'monitor.webhook_url' in {cf} holds spaces or control characters"),
    ('[monitor]\nwebhook_url = "http://example.com/\\u0000x"\n', "webhook_url with a NUL character",
     "holds spaces or control characters"),
    ('[reports]\nbackoff_s = nan\n', "reports.backoff_s = nan", "Setting 'reports.backoff_s' in {cf} must be a finite"),
    ('[monitor]\nwebhook_timeout_s = inf\n', "monitor.webhook_timeout_s = inf", "must be a finite number, got inf"),
]


@pytest.mark.slow
@pytest.mark.hostile
@pytest.mark.parametrize("toml,what,words", BAD_SETTINGS, ids=[w for _, w, _ in BAD_SETTINGS])
def test_a_malformed_setting_is_a_config_error_everywhere(toml, what, words, tmp_path, hostile):
    ws = Registry(log=False).ws
    Registry(ws, log=False).register("m", weights(tmp_path, "m1", 1))
    hostile(what)
    ws.config_path.write_text(toml)
    before = stored(ws), ws.config_path.read_bytes()
    words = words.format(cf=ws.config_path)
    with pytest.raises(ConfigError) as e:
        Workspace.open().config
    assert words in str(e.value), str(e.value)
    for cmd in (("config",), ("audit", "verify")):
        r = fmops(*cmd)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and words in r.stderr, (cmd, r.stderr)
        assert r.stderr.startswith("fmops: error:") and "Traceback" not in r.stderr
    assert (stored(ws), ws.config_path.read_bytes()) == before


# ---------------------------------------------------------------- wave 2: every --json output is JSON

def _json_commands() -> set:
    "Every command path of `fmops` whose parser accepts --json."
    import argparse
    from fmops_nb.cli import parser
    out = set()

    def walk(p, path):
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if subs:
            for name, sp in subs[0].choices.items(): walk(sp, path + (name,))
        elif any("--json" in a.option_strings for a in p._actions): out.add(path)
    walk(parser(), ())
    return out


def _strict_json(text: str, what):
    "Parse `text` as JSON as a strict parser does: NaN, Infinity and -Infinity are not JSON."
    def refuse(c): raise ValueError(f"{what}: {c} is not JSON")
    return json.loads(text, parse_constant=refuse)


TRAIN_NAN = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from fmops_nb.finetune import report
    report(1, loss=float('nan'))  # a diverged loss
    report(2, loss=float('inf'))
    flag = Path(os.environ['FMOPS_RUN_DIR']) / 'tried'
    if not flag.exists(): flag.write_text('once'); sys.exit(3)  # fails once: there is a run to resume
""")


@pytest.mark.hostile
@pytest.mark.slow
def test_every_json_output_is_strict_json(tmp_path, capsys, hostile):
    from conftest import recording_template
    from fmops_nb.cli import main
    hostile("a version with an all-zero bias (‖Δ‖/‖a‖ infinite) and one with NaN weights, diffed with --json")
    z = st_file(tmp_path / "z.safetensors", {"w": np.ones((4, 4), np.float32), "b": np.zeros(4, np.float32)})
    o = st_file(tmp_path / "o.safetensors", {"w": np.full((4, 4), 2, np.float32), "b": np.ones(4, np.float32)})
    n = st_file(tmp_path / "n.safetensors", {"w": np.full((4, 4), np.nan, np.float32), "b": np.ones(4, np.float32)})
    hostile("a fine-tune whose losses are NaN and inf, shown with --json")
    (tmp_path / "train.py").write_text(TRAIN_NAN)
    (tmp_path / "spec.yaml").write_text("recipe: script\nscript: train.py\nbase: ''\nmax_steps: 2\nmodel: scripted\n")
    recording_template(tmp_path, "tiny", "x", 1.0)
    (tmp_path / "ref.csv").write_text("x\n" + "\n".join(str(i) for i in range(300)) + "\n")
    (tmp_path / "cur.csv").write_text("x\n" + "\n".join(str(i + 150) for i in range(300)) + "\n")
    ws = Workspace.open()
    ws.config_path.write_text('[monitor]\nsinks = ["log"]\n[[monitor.policies]]\nname = "x-high"\nwhen = "x > 0.5"\n')
    run_id = lambda: sorted(p.name for p in ws.runs_dir.glob("ft-*"))[-1]
    report_id = lambda: sorted(str(p.relative_to(ws.reports_dir)) for p in ws.reports_dir.glob("tiny/*"))[-1]
    calls = [  # (command path, arguments, exit status)
        (("workspace",), ["workspace", "--json"], 0), (("config",), ["config", "--json"], 0),
        (("config",), ["config", "wandb.mode", "--json"], 0), (("drift",), ["drift", "ref.csv", "cur.csv"], 0),
        (("registry", "register"), ["registry", "register", "m", str(z), "--alias", "production", "--no-wandb"], 0),
        (("registry", "register"), ["registry", "register", "m", str(o), "--metric", "accuracy=0.9", "--no-wandb"], 0),
        (("registry", "register"), ["registry", "register", "m", str(n), "--no-wandb"], 0),
        (("registry", "ls"), ["registry", "ls"], 0), (("registry", "show"), ["registry", "show", "m:v2"], 0),
        (("registry", "show"), ["registry", "show", "m:v2", "--card"], 0),
        (("registry", "lineage"), ["registry", "lineage", "m:v2"], 0),
        (("registry", "promote"), ["registry", "promote", "m:v2", "--no-wandb"], 0),
        (("registry", "rollback"), ["registry", "rollback", "m:production", "--no-wandb"], 0),
        (("registry", "log"), ["registry", "log", "m:v1"], 0),
        (("registry", "gc"), ["registry", "gc", "--dry-run"], 0),
        (("diff",), ["diff", "m:v1", "m:v2"], 0), (("diff",), ["diff", "m:v2", "m:v3"], 0),
        (("audit",), ["audit", "verify"], 0), (("audit",), ["audit", "show"], 0),
        (("audit",), ["audit", "reanchor", "--reason", "checked"], 0),
        (("finetune", "run"), ["finetune", "run", "spec.yaml", "--wait"], 1),  # it fails once, as its script says
        (("finetune", "ls"), ["finetune", "ls"], 0), (("finetune", "show"), ["finetune", "show", run_id], 0),
        (("finetune", "resume"), ["finetune", "resume", run_id, "--wait"], 0),
        (("finetune", "stop"), ["finetune", "stop", run_id], 0),
        (("report", "templates"), ["report", "templates"], 0),
        (("report", "run"), ["report", "run", "tiny", "-p", "x", "0.75", "--no-wandb"], 0),
        (("report", "ls"), ["report", "ls"], 0), (("report", "show"), ["report", "show", report_id], 0),
        (("report", "rerun"), ["report", "rerun", report_id, "--no-wandb"], 0),
        (("monitor", "ls"), ["monitor", "ls"], 0), (("monitor", "check"), ["monitor", "check", report_id], 0),
        (("alerts", "ls"), ["alerts", "ls"], 0),
        (("schedule", "add"), ["schedule", "add", "nightly", "--cron", "0 6 * * *", "--template", "tiny"], 0),
        (("schedule", "ls"), ["schedule", "ls"], 0), (("schedule", "crontab"), ["schedule", "crontab"], 0),
        (("schedule", "run-due"), ["schedule", "run-due", "--no-wandb"], 0),
        (("schedule", "history"), ["schedule", "history"], 0), (("schedule", "rm"), ["schedule", "rm", "nightly"], 0),
        (("demo",), ["demo", "--tabular", "--dir", str(tmp_path / "demo"), "--rows", "300", "--no-wandb"], 0),
        (("approve",), ["approve", "m:v2", "--reason", "checked <b>by hand</b>"], 0),
        (("slices",), ["slices", "scored.csv", "--slice-by", "region"], 0),
        (("feedback", "import"), ["feedback", "import", "fb.jsonl"], 0),
        (("feedback", "export"), ["feedback", "export", "out.jsonl"], 0),
        (("feedback", "summary"), ["feedback", "summary", "pair"], 0),
        (("feedback", "metrics"), ["feedback", "metrics", "--queue", "q", "--by", "version"], 0),
    ]
    (tmp_path / "scored.csv").write_text("region,label,prediction\n" + "".join(
        f"{r},{i % 2},{(i // 3) % 2}\n" for i, r in enumerate(["north", "south", "<img onerror=x>"] * 40)))
    (tmp_path / "fb.jsonl").write_text("".join(json.dumps(
        {"input": f"t{i}", "output": "a", "kind": "label", "value": "a" if i % 3 else "b", "queue": "q",
         "version": "m:v1", "reviewer": "ann", "item": f"i{i}"}) + "\n" for i in range(6)))
    from fmops_nb import review
    review.create("pair", [{"input": f"<b>x{i}</b>", "output": "a"} for i in range(4)], labels=["a", "b"], ws=ws)
    assert {path for path, _, _ in calls} == _json_commands()  # every command that takes --json is tried here
    assert {args[1] for path, args, _ in calls if path == ("audit",)} == {"verify", "show", "reanchor"}
    got = {}
    for path, args, status in calls:
        args = [a() if callable(a) else a for a in args] + ["--json"]
        code = main(args)
        out, err = capsys.readouterr()
        assert code == status, (args, err)
        got.setdefault(path, []).append(_strict_json(out, args))
    tensors = {t["name"]: t for t in got[("diff",)][0]["tensors"]}
    assert tensors["b"]["rel_delta"] is None and tensors["b"]["norm_a"] == 0  # was Infinity
    assert tensors["w"]["rel_delta"] == pytest.approx(1.0)
    assert {t["name"]: t["cosine"] for t in got[("diff",)][1]["tensors"]}["w"] is None  # was NaN
    shown = got[("finetune", "show")][0]
    assert [e["loss"] for e in shown["events"] if e.get("kind") == "step"] == [None, None]  # were NaN and Infinity
    assert got[("finetune", "run")][0]["status"] == "failed" and got[("finetune", "resume")][0]["status"] == "finished"
    assert got[("registry", "promote")][0]["alias"] == "m:production"
    assert got[("registry", "rollback")][0]["version"]["id"] == "m:v1"
    card = got[("registry", "show")][1]["card"]  # the Hugging Face layout: YAML front matter, then the title
    assert card.startswith("---\n") and "\n# m:v2" in card
    assert got[("schedule", "rm")][0]["removed"] is True and "run-due" in got[("schedule", "crontab")][0]["crontab"]
    assert [t["name"] for t in got[("report", "templates")][0]][0] == "tiny"
    assert got[("audit",)][2]["anchor_file"] == str(ws.anchor_path) and verify_audit(ws).ok


def test_an_alias_set_at_registration_goes_through_the_promotion_gates(hostile):
    "`register(..., aliases=['production'])` (and `fmops registry register --alias`) is a promotion: a gate blocks it too."
    import torch
    from fmops_nb.monitor import PromotionBlocked
    ws = Workspace.open()
    ws.config_path.write_text('[monitor]\nsinks = ["log"]\n[[monitor.policies]]\nname = "no-worse"\non = "promote"\n'
                              'when = "candidate.accuracy < current.accuracy"\naction = "block"\n'); ws.reload()
    reg = Registry(ws, log=False)
    v1 = reg.register("g", {"w": torch.zeros(2)}, metrics={"accuracy": 0.9}, aliases=["production"])
    for metrics, what in (({"accuracy": 0.5}, "a worse candidate"), ({}, "a candidate without the metric")):
        hostile(f"register --alias production of {what}")
        with pytest.raises(PromotionBlocked, match=r"Registered g:v\d, but Policy 'no-worse' blocks promoting"):
            reg.register("g", {"w": torch.ones(2)}, metrics=metrics, aliases=["production"])
        assert reg.get("g:production").id == v1.id  # the alias did not move; the version is registered without it
    assert [v.aliases for v in reg.versions("g")] == [["production"], [], []]
    assert verify_audit(ws).ok
