"""Hostile inputs, third wave, for the foundations and the command line: a YAML key given twice, `--json` failures
that a script can parse, control characters in arguments, and a second move to PostgreSQL from a restored backup.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fmops_nb import cli
from fmops_nb.core import Workspace
from fmops_nb.errors import ConfigError, ValidationError
from fmops_nb.registry import Registry, verify_audit
from fmops_nb.reports import read_yaml

try:  # the session's PostgreSQL server and a fresh schema per test, as test_postgres.py starts them
    from test_postgres import new_schema, pg_server, weights  # noqa: F401
except pytest.skip.Exception:
    pg_server = None

KEY = "k" * 32


@pytest.fixture(autouse=True)
def _keyed(monkeypatch):
    monkeypatch.setenv("FMOPS_AUDIT_KEY", KEY)
    monkeypatch.delenv("FMOPS_DB_URL", raising=False)


# ---- 1. a key given twice in YAML is refused, at any depth, naming the key and both lines

@pytest.mark.hostile
@pytest.mark.parametrize("text, key, lines", [
    ("roles: [reviewer]\nalpha: 0.05\nroles: [admin]\n", "roles", "lines 1 and 3"),
    ("drift:\n  alpha: 0.05\n  bins: 10\n  alpha: 0.5\n", "alpha", "lines 2 and 4"),
    ("- name: a\n  checks:\n    - {psi: 0.1, psi: 0.9}\n", "psi", "lines 3 and 3"),
    ("a: 1\n'a': 2\n", "a", "lines 1 and 2"),  # the same text, quoted or not
])
def test_a_yaml_key_given_twice_is_refused_naming_it_and_its_lines(text, key, lines, hostile):
    hostile(f"a YAML document with the key {key!r} twice")
    with pytest.raises(ValidationError, match=rf"Spec file s.yaml gives the key '{key}' twice \({lines}\)"):
        read_yaml(text, "Spec file s.yaml")
    assert read_yaml("a: 1\nb: {a: 2}\n", mapping=True) == {"a": 1, "b": {"a": 2}}  # the same key in two mappings


@pytest.mark.hostile
@pytest.mark.parametrize("text", ["lr: 0.00002\n<<: {epochs: 50}\n", "base: minilm\n<<: [{lr: 1}, {epochs: 9}]\n",
                                  "steps:\n  - name: a\n    <<: {alpha: 0.5}\n"])
def test_the_yaml_merge_key_is_refused_as_anchors_are(text, hostile):
    hostile("a YAML merge key << with an inline mapping: keys that appear under no name")
    with pytest.raises(ValidationError, match=r"Spec file s.yaml uses the YAML merge key << \(line \d\)"):
        read_yaml(text, "Spec file s.yaml", mapping=True)
    assert read_yaml('"<<": {b: 2}\n', mapping=True) == {"<<": {"b": 2}}  # a quoted "<<" is an ordinary key


@pytest.mark.hostile
def test_a_duplicated_key_in_a_spec_file_or_a_parameter_file_stops_the_command(tmp_path, hostile):
    hostile("a fine-tune spec file and a report parameter file each giving a key twice")
    from fmops_nb.commands import collect_params
    from fmops_nb.finetune import FinetuneSpec
    spec = tmp_path / "spec.yaml"
    spec.write_text("base: minilm\ntrain: t.jsonl\nlr: 0.00002\nepochs: 1\nlr: 0.2\n")
    with pytest.raises(ValidationError, match=r"gives the key 'lr' twice \(lines 3 and 5\)"):
        FinetuneSpec.from_file(spec)
    params = tmp_path / "params.yaml"
    params.write_text("threshold: 0.1\ncolumns: [a]\nthreshold: 0.9\n")
    with pytest.raises(ValidationError, match=r"Parameter file .*params.yaml gives the key 'threshold' twice"):
        collect_params(None, [params])


@pytest.mark.hostile
@pytest.mark.hostile
def test_the_workspace_config_refuses_a_key_given_twice_too(tmp_path, hostile):
    hostile("config.toml giving a setting twice")
    ws = Workspace.open(tmp_path / "ws")
    ws.config_path.write_text('[drift]\nthreshold = 0.1\nthreshold = 0.9\n')
    with pytest.raises(ConfigError):
        Workspace.open(tmp_path / "ws").config["drift.threshold"]


# ---- 2. `--json`: a failure is one JSON object on stdout, the exit status as before

def fmops(*args, cwd=None, env=None):
    "Run the `fmops` command in a subprocess: (exit status, stdout, stderr)."
    r = subprocess.run([sys.executable, "-m", "fmops_nb.cli", *args], capture_output=True, text=True, cwd=cwd,
                       env={**os.environ, **(env or {})}, timeout=120)
    return r.returncode, r.stdout, r.stderr


@pytest.mark.hostile
def test_a_failing_command_with_json_prints_one_json_error_on_stdout(tmp_path, hostile):
    ws = str(tmp_path / "ws")
    hostile("--json commands that fail: unknown version, missing argument, unknown flag, unreadable workspace")
    cases = [
        (["-w", ws, "registry", "show", "nosuch:v9", "--json"], 1, "NotFoundError", "nosuch"),
        (["-w", ws, "registry", "show", "--json"], 2, "UsageError", "required: ref"),
        (["-w", ws, "registry", "ls", "--json", "--bogus"], 2, "UsageError", "unrecognized arguments: --bogus"),
        (["-w", ws, "registry", "show", "m", "--jsno", "--json"], 2, "UsageError", "did you mean --json"),
        (["-w", "/dev/null/ws", "registry", "ls", "--json"], 1, "WorkspaceError", "/dev/null/ws"),
        (["-w", ws, "config", "no.such.key", "--json"], 1, None, "no.such.key"),
    ]
    for argv, status, kind, says in cases:
        rc, out, err = fmops(*argv)
        assert rc == status, (argv, rc, out, err)
        doc = json.loads(out)  # exactly one JSON document, nothing else
        assert set(doc) == {"error", "kind"} and says in doc["error"], (argv, doc)
        assert kind is None or doc["kind"] == kind, (argv, doc)
        assert says in err  # the message for a person stays on stderr
    rc, out, err = fmops("-w", ws, "registry", "show", "nosuch:v9")  # without --json: stdout stays empty
    assert rc == 1 and out == "" and "nosuch" in err


@pytest.mark.hostile
def test_json_error_keeps_a_database_password_masked(tmp_path, hostile):
    hostile("a --json failure whose message names a PostgreSQL URL with a password")
    ws = tmp_path / "ws"
    Workspace.open(ws)
    (ws / "config.toml").write_text('[db]\nurl = "postgresql://u:s3cret-pw@127.0.0.1:1/x?connect_timeout=1"\n')
    rc, out, err = fmops("-w", str(ws), "registry", "ls", "--json")
    assert rc == 1 and "s3cret-pw" not in out + err
    assert json.loads(out)["kind"].endswith("Error")


@pytest.mark.hostile
def test_json_error_in_process_is_one_object_and_no_second_after_a_printed_result(tmp_path, capsys, hostile):
    hostile("fmops ... --json failing after it printed nothing, in-process")
    assert cli.main(["-w", str(tmp_path / "ws"), "registry", "promote", "m:v1", "--to", "production", "--json"]) == 1
    out = capsys.readouterr().out
    assert json.loads(out)["kind"] == "NotFoundError"


@pytest.mark.hostile
def test_control_characters_in_unrecognized_arguments_are_escaped_on_stderr(tmp_path, hostile):
    hostile("an unrecognized argument holding terminal escapes (clear screen, set title)")
    evil = "--x=\x1b[2J\x1b]0;pwned\x07"
    rc, out, err = fmops("-w", str(tmp_path / "ws"), "registry", "ls", evil, "--json")
    assert rc == 2 and "\x1b" not in err and "\x07" not in err and "\\x1b[2J" in err
    assert "\x1b" not in out and json.loads(out)["kind"] == "UsageError"



@pytest.mark.hostile
def test_a_workspace_path_with_a_newline_cannot_forge_a_crontab_line(tmp_path, monkeypatch, capsys, hostile):
    hostile("a cloned repo whose pyproject.toml sets `home` to a path holding a newline and a cron line")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pyproject.toml").write_text('[project]\nname = "x"\n[tool.fmops_nb]\n'
                                         'home = "ws\\n* * * * * touch pwned #"\n')
    monkeypatch.chdir(repo)
    monkeypatch.delenv("FMOPS_HOME", raising=False)  # the test session's own workspace would win over pyproject.toml
    assert cli.main(["schedule", "crontab"]) == 1
    cap = capsys.readouterr()
    assert "* * * * * touch pwned" not in cap.out and "control character" in cap.err
    assert sorted(p.name for p in repo.iterdir()) == ["pyproject.toml"]  # no workspace made
    monkeypatch.setenv("FMOPS_HOME", str(tmp_path / "w\x1b]0;t\x07s"))  # a terminal escape, from the environment
    with pytest.raises(ConfigError, match="control character"):
        Workspace.open()
    monkeypatch.setenv("FMOPS_HOME", str(tmp_path / "my models" / "modèles"))  # spaces and letters are fine
    assert Workspace.open().root.name == "modèles"

# ---- 3. moving to PostgreSQL again from a restored backup that still carries the `fmops_moved_*` triggers

@pytest.mark.hostile
def test_migrating_again_from_a_restored_backup_carries_no_moved_triggers(pg_server, tmp_path, hostile):
    import psycopg
    if pg_server is None:
        pytest.skip("pip install 'fmops_nb[postgres]'")
    hostile("a second move to PostgreSQL from the old fmops.db, restored with its fmops_moved_* triggers")
    root = tmp_path / "ws"
    reg = Registry(Workspace.open(root), log=False)
    reg.promote(reg.register("m", weights(tmp_path / "w1.safetensors", 1)).id, to="production")
    Workspace.open(root).migrate_db(new_schema(pg_server), verify=verify_audit)
    for side in ("", "-wal", "-shm"):  # the backup restored: the old file back, config.toml without [db]
        if Path(f"{root}/fmops.db.moved-to-postgresql{side}").exists():
            os.replace(f"{root}/fmops.db.moved-to-postgresql{side}", f"{root}/fmops.db{side}")
    (root / "config.toml").unlink()
    ws = Workspace.open(root)
    assert not ws.db_url
    url = new_schema(pg_server)
    out = ws.migrate_db(url, verify=verify_audit)
    assert out["rows"]["versions"] == 1
    with psycopg.connect(url) as c:
        assert c.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal").fetchall() == []
    moved = Workspace.open(root)
    assert moved.db_url == url and verify_audit(moved).ok
    reg = Registry(moved, log=False)  # the copy takes writes: no trigger refuses them
    assert reg.register("m", weights(tmp_path / "w2.safetensors", 2)).number == 2
    assert reg.get("m:production").id == "m:v1" and verify_audit(moved).ok


@pytest.mark.hostile
def test_a_trigger_fmops_did_not_make_stops_the_move_before_anything_is_copied(pg_server, tmp_path, hostile):
    import sqlite3
    if pg_server is None:
        pytest.skip("pip install 'fmops_nb[postgres]'")
    hostile("a move to PostgreSQL from an fmops.db holding a trigger someone added by hand")
    root = tmp_path / "ws"
    Registry(Workspace.open(root), log=False).register("m", weights(tmp_path / "w1.safetensors", 1))
    with sqlite3.connect(root / "fmops.db") as c:
        c.execute("CREATE TRIGGER audit_copy AFTER INSERT ON versions BEGIN SELECT 1; END")
    url = new_schema(pg_server)
    with pytest.raises(ConfigError, match="trigger 'audit_copy'.*nothing was copied"):
        Workspace.open(root).migrate_db(url, verify=verify_audit)
    ws = Workspace.open(root)
    assert not ws.db_url and ws.db_path.exists() and verify_audit(ws).ok
    import psycopg
    with psycopg.connect(url) as c:
        assert c.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"
                         ).fetchone()[0] == 0


# ---- what the third wave saw and left, closed: the cell body, --positive and the crontab's own paths

@pytest.mark.hostile
def test_a_cell_body_nested_beyond_any_spec_is_a_usage_error_not_a_recursion_error(hostile):
    """A %%fmops cell body is read once, by the hardened reader: a body nested 100,000 levels deep was parsed by
    yaml.safe_load first and raised a raw RecursionError."""
    hostile("a %%fmops cell body of 100,000 nested lists")
    from IPython.core.error import UsageError

    from fmops_nb.magics import _spec
    for body in ("[" * 100_000, "a:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 60)) + " " * 60 + "v: 1\n"):
        with pytest.raises(UsageError, match="not valid YAML|nests"):
            _spec(body)
    with pytest.raises(UsageError, match=r"not valid YAML at line 2, column 5"):  # where, then what
        _spec("a: 1\nb: x: y\n")


@pytest.mark.hostile
def test_slices_positive_is_read_by_the_hardened_reader(tmp_path, hostile, capsys):
    """`--positive` with a Python tag was handed to yaml.safe_load, whose ConstructorError escaped as a traceback;
    now it is read as `-p` values are: what is not plain YAML is the text as typed."""
    hostile("fmops slices --positive '!!python/object/apply:os.system [true]'")
    import pandas as pd
    data = tmp_path / "d.csv"
    pd.DataFrame({"a": ["x", "y"] * 20, "label": [1, 0] * 20, "prediction": [1, 1] * 20}).to_csv(data, index=False)
    rc = cli.main(["-w", str(tmp_path / "ws"), "slices", str(data), "--slice-by", "a", "--min-n", "1",
                   "--positive", "!!python/object/apply:os.system [true]"])
    err = capsys.readouterr().err
    assert rc == 0 and "Traceback" not in err, err  # a value that is not plain YAML is kept as the text typed
    assert cli.main(["-w", str(tmp_path / "ws"), "slices", str(data), "--slice-by", "a", "--min-n", "1",
                     "--positive", "1"]) == 0


@pytest.mark.hostile
def test_the_crontab_escapes_percent_and_refuses_a_folder_with_a_newline(tmp_path, monkeypatch, hostile):
    """cron turns a bare % into a newline (the rest of the line becomes the command's input): a path with % is
    escaped; a current folder whose path holds a newline would start a cron line of its own, so it is refused."""
    hostile("fmops schedule crontab from a folder named 'a%b', then from one named 'x\\n* * * * * touch pwned'")
    from fmops_nb import schedule
    ws = Workspace.open(tmp_path / "ws" / ".fmops")
    tpl = Path(__file__).resolve().parents[1] / "templates" / "drift_report.ipynb"
    schedule.add("nightly", "0 3 * * *", str(tpl), ws=ws)
    odd = tmp_path / "a%b"
    odd.mkdir()
    monkeypatch.chdir(odd)
    line = next(l for l in schedule.crontab(ws).splitlines() if "--only nightly" in l)
    assert "a\\%b" in line and "a%b" not in line.replace("\\%", "")
    forged = tmp_path / "x\n* * * * * touch pwned"
    forged.mkdir()
    monkeypatch.chdir(forged)
    with pytest.raises(ConfigError, match="control character"):
        schedule.crontab(ws)
