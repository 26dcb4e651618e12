"""The workspace's metadata in PostgreSQL: a real server from Debian's packages, the registry, audit, concurrency and
kill checks on it and on SQLite alike, two "machines" sharing one database, and the move of an SQLite workspace.

The server is started once per session: `initdb` into a temporary folder, then `postgres` listening on 127.0.0.1 (and
a socket in that folder) on a free port, with trust authentication for the test user. Run as root (as in CI), both
run as the unprivileged `postgres` user (Debian's package creates it; `nobody` otherwise): PostgreSQL refuses root.
The server is stopped by its pid (SIGINT: fast shutdown) and the folder removed at the end. Each test gets its own
schema (`?options=-csearch_path%3D...` in the URL), so tests never see each other's tables.
"""
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

psycopg = pytest.importorskip("psycopg", reason="pip install 'fmops_nb[postgres]'")

from fmops_nb import postgres as pg  # noqa: E402
from fmops_nb.audit import audit_log  # noqa: E402
from fmops_nb.core import Workspace  # noqa: E402
from fmops_nb.errors import ConfigError, WorkspaceError  # noqa: E402
from fmops_nb.registry import Registry, verify_audit  # noqa: E402

KEY = "k" * 32  # the audit key: every test runs keyed, so HMACs are written and checked


def _bindir() -> Path | None:
    "The folder of Debian's `postgres` and `initdb` (the newest installed major version)."
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    return Path(shutil.which("postgres")).parent if shutil.which("postgres") else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_server():
    "A PostgreSQL server for the session; yields the URL of its `postgres` database."
    bindir = _bindir()
    if bindir is None or not (bindir / "initdb").exists():
        pytest.skip("PostgreSQL's server is not installed (apt-get install postgresql)")
    run_as = {}
    folder = Path(tempfile.mkdtemp(prefix="fmops-pg-"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            user = pwd.getpwnam("nobody")
        os.chown(folder, user.pw_uid, user.pw_gid)
        run_as = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    data, port = folder / "data", _free_port()
    subprocess.run([bindir / "initdb", "-D", data, "--auth=trust", "-U", "fmops", "-E", "UTF8", "--no-sync",
                    "--no-instructions"], check=True, capture_output=True, cwd=folder, **run_as)
    log = open(folder / "server.log", "wb")
    proc = subprocess.Popen([bindir / "postgres", "-D", data, "-p", str(port), "-c", "listen_addresses=127.0.0.1",
                             "-k", folder, "-c", "fsync=off", "-c", "full_page_writes=off"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=folder, **run_as)
    url = f"postgresql://fmops@127.0.0.1:{port}/postgres"
    try:
        deadline = time.monotonic() + 60
        while True:  # ready when it accepts a connection; a server that exits fails at once
            assert proc.poll() is None, (folder / "server.log").read_text()[-3000:]
            try:
                psycopg.connect(url, connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, (folder / "server.log").read_text()[-3000:]
                time.sleep(0.05)
        yield url
    finally:
        with pg._POOL_LOCK:  # this process's idle connections, so the server's fast shutdown has nothing to wait for
            while pg._POOL:
                pg._POOL.pop()[1].close()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def new_schema(server: str) -> str:
    "A URL for a fresh, empty schema of the session's database."
    name = f"t_{secrets.token_hex(5)}"
    with psycopg.connect(server, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {name}")
    return f"{server}?options=-csearch_path%3D{name}"


@pytest.fixture
def pg_url(pg_server):
    return new_schema(pg_server)


@pytest.fixture(autouse=True)
def _keyed(monkeypatch):
    monkeypatch.setenv("FMOPS_AUDIT_KEY", KEY)
    monkeypatch.delenv("FMOPS_DB_URL", raising=False)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, monkeypatch):
    "Each test that takes it runs on the embedded SQLite file and on the session's PostgreSQL server."
    if request.param == "postgres":
        monkeypatch.setenv("FMOPS_DB_URL", new_schema(request.getfixturevalue("pg_server")))
    return request.param


def weights(path: Path, value: float, n: int = 4) -> Path:
    "A small safetensors file (numpy: no torch import needed)."
    from safetensors.numpy import save_file
    save_file({"w": np.full((n, n), value, dtype=np.float32), "b": np.arange(n, dtype=np.float32)}, str(path))
    return path


def test_registry_runs_the_same_on_both_backends(backend, tmp_path):
    from fmops_nb import feedback, monitor, schedule
    ws = Workspace.open(tmp_path / "ws")
    reg = Registry(ws, log=False)
    vs = [reg.register("clf", weights(tmp_path / f"w{i}.safetensors", i), metrics={"accuracy": 0.8 + i / 100})
          for i in range(3)]
    reg.promote(vs[1].id, to="production", reason="better")
    reg.promote(vs[2].id, to="production", reason="better still")
    reg.rollback("clf:production", reason="regressed")
    assert [v.number for v in reg.versions("clf")] == [1, 2, 3]
    assert reg.get("clf:production").id == "clf:v2"
    assert [(h["version"], h["action"]) for h in reg.history("clf", "production")] == \
        [("clf:v2", "promote"), ("clf:v3", "promote"), ("clf:v2", "rollback")]
    assert float(reg.load("clf:production")["w"][0, 0]) == 1.0  # the weights, read back from the blobs
    fid = feedback.log("hello", "hi", kind="rating", value=4, version="clf:production", ws=ws)
    assert list(feedback.query(ws=ws)["id"]) == [fid]
    schedule.add("nightly", "0 6 * * *", "drift_report", {}, ws=ws)
    assert [s.name for s in schedule.schedules(ws)] == ["nightly"]
    first = monitor.raise_alert(ws, "drift", "drift on 3 columns", sinks=[])
    second = monitor.raise_alert(ws, "drift", "drift on 4 columns", sinks=[])
    assert second["id"] == first["id"] + 1
    monitor.acknowledge(first["id"], ws=ws)
    assert [a["message"] for a in monitor.alerts(ws)] == ["drift on 4 columns"]
    check = verify_audit(ws)
    assert check.ok, check.problems
    assert [r["action"] for r in audit_log(ws)][::-1] == \
        ["register"] * 3 + ["promote"] * 2 + ["rollback", "feedback", "acknowledge"]  # the same rows, in order
    assert (ws.root / "fmops.db").exists() == (backend == "sqlite")  # PostgreSQL: no SQLite file at all
    assert ws.describe()["database"].startswith("postgresql://" if backend == "postgres" else "/")


def test_an_edited_or_cut_audit_log_is_found_on_postgres(pg_url, tmp_path, monkeypatch):
    monkeypatch.setenv("FMOPS_DB_URL", pg_url)
    reg = Registry(Workspace.open(tmp_path / "ws"), log=False)
    for i in range(2):
        reg.promote(reg.register("m", weights(tmp_path / f"w{i}.safetensors", i)).id, to="production")
    assert verify_audit(reg.ws).ok
    with psycopg.connect(pg_url, autocommit=True) as c:  # someone with database access edits, then cuts, the log
        c.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
        problems = verify_audit(reg.ws).problems
        assert any("row 2" in p and "edited" in p for p in problems), problems
        c.execute("DELETE FROM audit WHERE seq = (SELECT MAX(seq) FROM audit)")
    problems = verify_audit(reg.ws).problems  # the cut tail is found through AUTOINCREMENT's high-water mark
    assert any("row 4 (the last one written) is missing" in p for p in problems), problems


def test_an_unreachable_database_is_a_clear_error_and_writes_nothing(tmp_path, monkeypatch):
    url = f"postgresql://team:hunter2@127.0.0.1:{_free_port()}/fmops"
    monkeypatch.setenv("FMOPS_DB_URL", url)
    with pytest.raises(WorkspaceError) as e:
        Workspace.open(tmp_path / "ws")
    msg = str(e.value)
    assert "postgresql://team:***@127.0.0.1" in msg and "hunter2" not in msg and "nothing was" in msg
    assert not (tmp_path / "ws").exists()  # no folder, no config, no fmops.db
    monkeypatch.setenv("FMOPS_DB_URL", "postgress://db/fmops")
    with pytest.raises(ConfigError, match="postgresql://user@host"):
        Workspace.open(tmp_path / "ws")


def test_an_older_schema_is_migrated_and_a_newer_one_refused(pg_url, tmp_path, monkeypatch):
    from fmops_nb import audit, monitor
    monkeypatch.setenv("FMOPS_DB_URL", pg_url)
    ws = Workspace.open(tmp_path / "ws")
    ws.ensure_schema("audit", audit._AUDIT[:1])  # the audit table as the first release made it: no mac column
    assert ws.schema_version("audit") == 1
    columns = ("SELECT column_name FROM information_schema.columns WHERE table_name = 'audit' "
               "AND table_schema = current_schema()")
    with ws.connect() as con:
        assert "mac" not in {r[0] for r in con.execute(columns)}
    reg = Registry(ws, log=False)  # opening the registry migrates the log and creates its own tables
    assert ws.schema_version("audit") == len(audit._AUDIT) and ws.schema_version("registry") == 1
    with ws.connect() as con:
        assert "mac" in {r[0] for r in con.execute(columns)}
    reg.register("m", weights(tmp_path / "w.safetensors", 1))
    assert verify_audit(ws).ok
    monitor.alerts(ws)
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute("UPDATE schema_versions SET version = 99 WHERE component = 'monitor'")
    with pytest.raises(WorkspaceError, match="newer than this fmops_nb knows"):
        monitor.raise_alert(ws, "p", "x", sinks=[])


WRITER = r"""
import sys, numpy as np
from safetensors.numpy import save_file
from fmops_nb.core import Workspace
from fmops_nb.registry import Registry
ws, tag, n, tmp = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
reg = Registry(Workspace.open(ws), log=False)
for i in range(n):
    path = f"{tmp}/{tag}{i}.safetensors"
    save_file({'w': np.full((64, 64), i, dtype=np.float32), 'who': np.frombuffer(tag.encode(), np.uint8).copy()}, path)
    v = reg.register('shared', path, metrics={'step': i})
    reg.promote(v.id, to='production', reason=f'{tag} {i}')
print('done', flush=True)
"""


@pytest.mark.slow  # two processes
def test_two_machines_register_and_promote_at_once_without_losing_anything(pg_url, tmp_path):
    shared = tmp_path / "nfs" / "blobs"  # the path both machines mount
    roots = [tmp_path / f"machine-{m}" / ".fmops" for m in "ab"]
    for root in roots:  # each machine has its own workspace folder, pointed at one database and one blob path
        root.mkdir(parents=True)
        (root / "config.toml").write_text(f'[db]\nurl = "{pg_url}"\n\n[blobs]\npath = "{shared}"\n')
    Registry(Workspace.open(roots[0]), log=False)  # schema in place before the race
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), tag, "5", str(tmp_path)], text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for root, tag in zip(roots, "ab")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    for root in roots:  # each machine sees everything both wrote
        reg = Registry(Workspace.open(root), log=False)
        vs = reg.versions("shared")
        assert [v.number for v in vs] == list(range(1, 11))  # consecutive numbers, none lost, none doubled
        assert sorted(v.meta["metrics"]["step"]["value"] for v in vs) == sorted([float(i) for i in range(5)] * 2)
        moves = reg.history("shared", "production")
        assert len(moves) == 10 and {m["reason"].split()[0] for m in moves} == {"a", "b"}
        assert reg.get("shared:production").id == moves[-1]["version"]
        check = verify_audit(reg.ws)
        assert check.ok and check.rows == 20, check
        for v in vs:  # the weights either machine stored, read back whole through the shared path
            assert chr(int(reg.load(v.id)["who"][0])) in "ab"
        assert not (root / "fmops.db").exists() and not (root / "blobs").exists()


KILLED = r"""
import sys
from fmops_nb.core import Workspace
from fmops_nb.registry import Registry
reg = Registry(Workspace.open(sys.argv[1]), log=False)
print('ready', flush=True)
reg.register('big', sys.argv[2], metrics={'accuracy': 0.9})
print('registered', flush=True)
"""


@pytest.mark.slow  # a process killed mid-register
def test_a_kill_during_register_leaves_no_half_version_on_postgres(pg_url, tmp_path, monkeypatch):
    from safetensors.numpy import save_file
    monkeypatch.setenv("FMOPS_DB_URL", pg_url)
    reg = Registry(Workspace.open(tmp_path / "ws"), log=False)
    reg.register("big", weights(tmp_path / "small.safetensors", 0))  # v1 exists before the kill
    big = tmp_path / "big.safetensors"
    rng = np.random.default_rng(0)
    save_file({f"layer{i}": rng.standard_normal((512, 1024), dtype=np.float32) for i in range(16)}, str(big))
    p = subprocess.Popen([sys.executable, "-c", KILLED, str(tmp_path / "ws"), str(big)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    reg = Registry(Workspace.open(tmp_path / "ws"), log=False)
    vs = reg.versions("big")
    assert [v.number for v in vs] in ([1], [1, 2])  # the new version is there whole, or not at all
    for v in vs:
        reg.files(v.id)  # every file of every visible version verifies against its hash
    assert verify_audit(reg.ws).ok
    reg.gc(grace_s=0)
    kept = {f["sha256"] for v in vs for f in v.files.values()} | {x for v in vs for x in (v.manifest, v.card)}
    assert set(reg.blobs.all()) == kept and not reg.blobs.temporaries()
    again = reg.register("big", big)  # and the registry still works
    assert again.number == len(vs) + 1 and reg.load(again.id)["layer3"].shape == (512, 1024)


def test_migrate_moves_a_workspace_to_postgres_verified_on_both_sides(pg_url, tmp_path):
    from fmops_nb import feedback, monitor
    ws = Workspace.open(tmp_path / "ws")  # SQLite, as every workspace starts
    reg = Registry(ws, log=False)
    for i in range(2):
        reg.promote(reg.register("m", weights(tmp_path / f"w{i}.safetensors", i)).id, to="production")
    reg.rollback("m:production", reason="regressed")
    feedback.log("q", "a", kind="thumbs", value="up", version="m:production", ws=ws)
    monitor.raise_alert(ws, "drift", "drift on 2 columns", sinks=[])
    before, head = verify_audit(ws), ws.audit_head()
    assert before.ok and "mac" in head
    out = ws.migrate_db(pg_url, verify=verify_audit)
    assert out["audit_rows"] == before.rows == 6 and out["rows"]["versions"] == 2
    assert not ws.db_path.exists() and (ws.root / "fmops.db.moved-to-postgresql").exists()
    moved = Workspace.open(tmp_path / "ws")  # from now on, config.toml points it at PostgreSQL
    assert moved.db_url == pg_url and moved.describe()["database"].startswith("postgresql://")
    assert verify_audit(moved).ok and moved.audit_head() == head  # rows, hashes and HMACs survived the move
    reg = Registry(moved, log=False)
    assert reg.get("m:production").id == "m:v1" and len(reg.history("m", "production")) == 3
    assert float(reg.load("m:v2")["w"][0, 0]) == 1.0
    assert [a["message"] for a in monitor.alerts(moved)] == ["drift on 2 columns"]
    assert len(feedback.query(ws=moved)) == 1
    v3 = reg.register("m", weights(tmp_path / "w3.safetensors", 3))  # numbering continues, and the audit chain
    assert v3.number == 3 and moved.audit_head()["seq"] == 7 and verify_audit(moved).ok
    with pytest.raises(ConfigError, match="already keeps its metadata"):
        moved.migrate_db(pg_url)
    other = Workspace.open(tmp_path / "other")  # a second workspace cannot be poured into a used database
    Registry(other, log=False).register("x", weights(tmp_path / "x.safetensors", 1))
    with pytest.raises(ConfigError, match="already holds tables"):
        other.migrate_db(pg_url, verify=verify_audit)
    assert other.db_path.exists() and not other.db_url and verify_audit(other).ok  # left as it was


def test_fmops_workspace_migrate_on_the_command_line(pg_url, tmp_path, capsys):
    from fmops_nb import cli
    ws = tmp_path / "ws"
    reg = Registry(Workspace.open(ws), log=False)
    reg.promote(reg.register("m", weights(tmp_path / "w.safetensors", 1)).id, to="production")
    capsys.readouterr()
    assert cli.main(["-w", str(ws), "workspace", "migrate", "--to", "postgresql://u:pw@127.0.0.1:1/x"]) == 1
    err = capsys.readouterr().err
    assert "Cannot reach the PostgreSQL database postgresql://u:***@127.0.0.1:1/x" in err and ":pw@" not in err
    assert cli.main(["-w", str(ws), "workspace", "migrate", "--to", pg_url]) == 0
    assert "audit verify` passed before and after" in capsys.readouterr().out
    assert cli.main(["-w", str(ws), "audit", "verify"]) == 0
    assert "chain intact" in capsys.readouterr().out
    assert cli.main(["-w", str(ws), "registry", "ls", "--json"]) == 0
    assert '"m:v1"' in capsys.readouterr().out


HOLDER = r"""
import sys, time
from fmops_nb.core import Workspace
from fmops_nb.audit import append_audit
ws = Workspace.open(sys.argv[1])
with ws.transaction() as con:  # holds the workspace's write lock, with rows and an audit row not yet committed
    con.execute("INSERT INTO models VALUES (?,?,?)", ('ghost', 'now', 'someone'))
    append_audit(con, 'note', 'ghost', None, {'half': True})
    print('inside', flush=True)
    time.sleep(600)
"""


def test_a_writer_killed_inside_its_transaction_leaves_nothing_and_blocks_no_one(pg_url, tmp_path, monkeypatch):
    monkeypatch.setenv("FMOPS_DB_URL", pg_url)
    reg = Registry(Workspace.open(tmp_path / "ws"), log=False)
    reg.register("m", weights(tmp_path / "w1.safetensors", 1))
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "ws")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=os.environ | {"FMOPS_DB_URL": pg_url})
    assert p.stdout.readline().strip() == "inside", p.stderr.read()
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    t = time.monotonic()  # the server rolls the dead writer back and frees its lock: the next writer does not wait
    v2 = reg.register("m", weights(tmp_path / "w2.safetensors", 2))
    assert time.monotonic() - t < 10 and v2.number == 2
    assert reg.models() == ["m"] and [r["action"] for r in audit_log(reg.ws)] == ["register", "register"]
    check = verify_audit(reg.ws)  # the killed writer's audit number was given back: the chain has no gap
    assert check.ok and check.rows == 2, check.problems


MIGRATE_KILLED = r"""
import os, signal, sys
from fmops_nb import postgres
from fmops_nb.core import Workspace
from fmops_nb.registry import verify_audit
real, made, when = postgres.PgConnection.execute, [], sys.argv[3]
def execute(self, sql, params=()):  # the power goes out after the third table is filled, or right after the COMMIT
    create = sql.lstrip().upper().startswith('CREATE TABLE')
    if when == 'copying' and create and len(made) == 3: os.kill(os.getpid(), signal.SIGKILL)
    made.extend([sql] if create else [])
    out = real(self, sql, params)
    if when == 'committed' and sql == 'COMMIT': os.kill(os.getpid(), signal.SIGKILL)
    return out
postgres.PgConnection.execute = execute
Workspace.open(sys.argv[1]).migrate_db(sys.argv[2], verify=verify_audit)
"""


@pytest.mark.hostile
def test_a_migration_killed_half_way_leaves_both_sides_as_they_were_and_runs_again(pg_url, tmp_path, hostile):
    hostile("`fmops workspace migrate` killed half-way through the copy")
    ws = Workspace.open(tmp_path / "ws")
    reg = Registry(ws, log=False)
    reg.promote(reg.register("m", weights(tmp_path / "w.safetensors", 1)).id, to="production")
    config = ws.config_path.read_text() if ws.config_path.exists() else None
    p = subprocess.run([sys.executable, "-c", MIGRATE_KILLED, str(ws.root), pg_url, "copying"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    with psycopg.connect(pg_url, autocommit=True) as c:  # the server rolled the copy back: not one table is left
        assert c.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = "
                         "current_schema()").fetchall() == []
    assert ws.db_path.is_file() and (ws.config_path.read_text() if ws.config_path.exists() else None) == config
    again = Workspace.open(ws.root)
    assert not again.db_url and Registry(again, log=False).get("m:production").id == "m:v1"
    out = again.migrate_db(pg_url, verify=verify_audit)  # run again: it goes through
    assert out["rows"]["versions"] == 1 and Workspace.open(ws.root).db_url == pg_url
    assert Registry(Workspace.open(ws.root), log=False).get("m:production").id == "m:v1"


@pytest.mark.hostile
@pytest.mark.parametrize("options, says", [
    ("?options=-csearch_path%3Dno_such_schema", "CREATE SCHEMA"),  # a typo in the schema's name
    ("?options=-cdefault_transaction_read_only%3Don", "read-only"),  # a standby, or a read-only role
])
def test_a_database_fmops_cannot_write_is_a_clear_error_naming_it(pg_server, options, says, tmp_path, monkeypatch,
                                                                  hostile):
    hostile(f"FMOPS_DB_URL ending {options}")
    monkeypatch.setenv("FMOPS_DB_URL", pg_server.replace("fmops@", "fmops:s3cr3t@") + options)
    with pytest.raises(WorkspaceError) as e:
        Registry(Workspace.open(tmp_path / "ws"), log=False)
    msg = str(e.value)
    assert "postgresql://fmops:***@127.0.0.1" in msg and says in msg and "s3cr3t" not in msg, msg


@pytest.mark.hostile
def test_a_user_without_rights_on_the_schema_is_told_what_to_grant(pg_server, tmp_path, monkeypatch, hostile):
    hostile("FMOPS_DB_URL naming a role that may not create tables in the schema")
    url = new_schema(pg_server)
    with psycopg.connect(pg_server, autocommit=True) as c:
        if not c.execute("SELECT 1 FROM pg_roles WHERE rolname = 'fmops_reader'").fetchone():
            c.execute("CREATE ROLE fmops_reader LOGIN")
        c.execute(f"GRANT USAGE ON SCHEMA {url.rsplit('%3D', 1)[1]} TO fmops_reader")  # it may look, not create
    monkeypatch.setenv("FMOPS_DB_URL", url.replace("fmops@", "fmops_reader:s3cr3t@"))
    with pytest.raises(WorkspaceError, match=r"fmops_reader:\*\*\*@.*refused fmops \(permission denied.*Grant it") as e:
        Registry(Workspace.open(tmp_path / "ws"), log=False)
    assert "s3cr3t" not in str(e.value)


@pytest.mark.hostile
def test_a_migration_killed_after_its_copy_committed_completes_when_run_again(pg_url, tmp_path, hostile):
    "Killed between the copy's COMMIT and the switch of config.toml: the copy is whole, so running again completes it."
    hostile("`fmops workspace migrate` killed after the copy committed, before the workspace switched over")
    ws = Workspace.open(tmp_path / "ws")
    reg = Registry(ws, log=False)
    reg.promote(reg.register("m", weights(tmp_path / "w.safetensors", 1)).id, to="production")
    p = subprocess.run([sys.executable, "-c", MIGRATE_KILLED, str(ws.root), pg_url, "committed"], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert not Workspace.open(ws.root).db_url and ws.db_path.is_file()  # not switched over yet
    out = Workspace.open(ws.root).migrate_db(pg_url, verify=verify_audit)  # run again: verified, then switched
    assert out["rows"]["versions"] == 1 and Workspace.open(ws.root).db_url == pg_url
    moved = Registry(Workspace.open(ws.root), log=False)
    assert moved.get("m:production").id == "m:v1" and verify_audit(moved.ws).ok
    assert moved.register("m", weights(tmp_path / "w2.safetensors", 2)).number == 2
    other = Workspace.open(tmp_path / "other")  # an interrupted copy of another workspace is still no place to pour
    Registry(other, log=False).register("x", weights(tmp_path / "x.safetensors", 1))
    with pytest.raises(ConfigError, match="already holds tables.*interrupted"):
        other.migrate_db(pg_url, verify=verify_audit)


LATE_WRITER = r"""
import sqlite3, sys, time
from pathlib import Path
from fmops_nb.core import Workspace
from fmops_nb.audit import append_audit
ws, sig = Workspace.open(sys.argv[1]), Path(sys.argv[2])  # opened before the move: it still thinks SQLite
def wait(name):
    deadline = time.monotonic() + 60
    while not (sig / name).exists(): assert time.monotonic() < deadline, name; time.sleep(0.01)
wait('go')
probe = sqlite3.connect(ws.db_path, timeout=0, isolation_level=None)  # is the migration holding the write lock?
try: probe.execute('BEGIN IMMEDIATE'); probe.execute('ROLLBACK'); state = 'free'
except sqlite3.OperationalError: state = 'locked'
probe.close()
(sig / 'probed').write_text(state)
try:
    with ws.transaction() as con: append_audit(con, 'note', 'late-writer', None, {'late': True})
    out = 'ok'
except Exception as e: out = f'{type(e).__name__}: {e}'
(sig / 'done').write_text(out)
"""


def _wait_for(path: Path, proc) -> str:
    "The text of `path` once the other process wrote it (fails at once if that process died first)."
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None or path.exists(), proc.stderr.read()
        assert time.monotonic() < deadline, f"{path.name} never came"
        time.sleep(0.01)
    return path.read_text()


@pytest.mark.hostile
def test_a_write_from_another_process_during_the_migration_is_not_lost(pg_url, tmp_path, hostile):
    "A teammate's process writes while `migrate` verifies the copy: its write reaches PostgreSQL or is refused."
    hostile("another process writes to fmops.db between the migration's copy and its switch to PostgreSQL")
    ws = Workspace.open(tmp_path / "ws")
    reg = Registry(ws, log=False)
    reg.promote(reg.register("m", weights(tmp_path / "w.safetensors", 1)).id, to="production")
    sig = tmp_path / "sig"
    sig.mkdir()
    p = subprocess.Popen([sys.executable, "-c", LATE_WRITER, str(ws.root), str(sig)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)

    def verify(w):  # runs between the copy and the switch: the other process writes now
        check = verify_audit(w)
        if w.db_url:
            (sig / "go").touch()
            if _wait_for(sig / "probed", p) == "free":  # not locked out: let its write land before the switch
                _wait_for(sig / "done", p)
        return check

    try:
        out = ws.migrate_db(pg_url, verify=verify)
        _wait_for(sig / "done", p)
        p.wait(timeout=60)
    finally:
        p.kill()
    late = (sig / "done").read_text()
    moved = Workspace.open(ws.root)
    assert moved.db_url == pg_url and verify_audit(moved).ok
    in_pg = [r for r in audit_log(moved) if r["subject"] == "late-writer"]
    assert (late == "ok") == bool(in_pg), late  # written where the workspace now lives, or refused: never lost
    if late != "ok":
        assert "PostgreSQL" in late or "no such table" in late, late
    import sqlite3
    old = sqlite3.connect(ws.root / "fmops.db.moved-to-postgresql")  # the backup holds nothing PostgreSQL lacks
    assert old.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == out["audit_rows"]
    old.close()


def test_a_process_that_read_its_settings_before_the_move_writes_to_postgres_not_to_a_new_sqlite_file(
        pg_url, tmp_path, hostile):
    "A kernel or `schedule serve` opened the workspace before another process moved it: its next write follows it."
    hostile("a Workspace whose settings were read before the migration writes afterwards")
    stale = Workspace.open(tmp_path / "ws")
    Registry(stale, log=False).register("m", weights(tmp_path / "w0.safetensors", 0))
    assert not stale.db_url  # its settings are read: SQLite
    Workspace.open(tmp_path / "ws").migrate_db(pg_url, verify=verify_audit)  # "another process" moves it
    v = Registry(stale, log=False).register("m", weights(tmp_path / "w1.safetensors", 1))
    assert not stale.db_path.exists()  # was: a fresh, empty fmops.db created and the version written there
    moved = Workspace.open(tmp_path / "ws")
    assert Registry(moved, log=False).get("m:v2").id == v.id == "m:v2" and verify_audit(moved).ok
