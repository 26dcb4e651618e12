"""The "past one machine" features against hostile and broken inputs: database and scheduler URLs that carry secrets or
cannot be parsed, parquet datasets that are not there, and cost records with figures that are not numbers. Each test
asserts the clear error (no secret in it) and that nothing was written or shown wrong."""
import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from fmops_nb.core import Workspace
from fmops_nb.costs import Cost, gain_html, gain_line, total
from fmops_nb.errors import ConfigError, FmopsError, ValidationError, WorkspaceError

SECRET = "hunter2SECRET"


@pytest.fixture(scope="module")
def client():
    "A small cluster for the module: two worker threads talking to the scheduler over TCP on 127.0.0.1."
    from distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


def frames():
    rng = np.random.default_rng(0)
    return (pd.DataFrame({"a": rng.normal(0, 1, 300), "b": rng.choice(["x", "y"], 300)}),
            pd.DataFrame({"a": rng.normal(1, 1, 300), "b": rng.choice(["x", "y"], 300)}))


@pytest.mark.hostile
@pytest.mark.parametrize("url", [
    f"host=db.example user=fmops password={SECRET}",  # libpq's keyword form, not a URL
    f"postgresql://fmops@127.0.0.1:1/fmops?sslpassword={SECRET}",  # the client key's passphrase
    f"postgresql://fmops@127.0.0.1:1/fmops?PASSWORD={SECRET}",
    f"postgresql://fmops:{SECRET}@[127.0.0.1/fmops",  # an unparsable URL
])
def test_a_database_url_s_secret_never_reaches_a_message(url, tmp_path, monkeypatch, hostile):
    hostile(f"FMOPS_DB_URL={url!r}")
    monkeypatch.setenv("FMOPS_DB_URL", url)
    with pytest.raises((ConfigError, WorkspaceError)) as e:
        Workspace.open(tmp_path / "ws")
    assert SECRET not in str(e.value) and "***" in str(e.value), str(e.value)
    assert not (tmp_path / "ws").exists()  # nothing written
    monkeypatch.delenv("FMOPS_DB_URL")
    ws = tmp_path / "cfg" / ".fmops"
    ws.mkdir(parents=True)
    (ws / "config.toml").write_text(f"[db]\nurl = {json.dumps(url)}\n")
    with pytest.raises((ConfigError, WorkspaceError)) as e:
        Workspace.open(ws).connect()
    assert SECRET not in str(e.value), str(e.value)
    assert sorted(p.name for p in ws.iterdir()) == ["config.toml"]


@pytest.mark.hostile
def test_a_dataset_or_scheduler_url_s_secret_never_reaches_a_message(client, hostile):
    from fmops_nb.dask_drift import drift_dask
    ref, cur = frames()
    for src in (f"s3://AKIAEXAMPLE:{SECRET}@bucket/events/", f"gcs://bucket/events/?token={SECRET}",
                f"https://reader:{SECRET}@127.0.0.1:1/events.parquet"):
        hostile(f"parquet dataset {src!r}")
        with pytest.raises(FmopsError) as e:
            drift_dask(src, cur, scheduler=client)
        assert SECRET not in str(e.value) and "***" in str(e.value), str(e.value)
    for address in (f"tls://admin:{SECRET}@127.0.0.1", f"tcp://admin:{SECRET}@127.0.0.1:1"):
        hostile(f"scheduler {address!r}")
        with pytest.raises(FmopsError) as e:
            drift_dask(ref, cur, scheduler=address)
        assert SECRET not in str(e.value), str(e.value)


@pytest.mark.hostile
def test_a_glob_or_folder_that_matches_no_parquet_file_is_named(client, tmp_path, hostile):
    from fmops_nb.dask_drift import drift_dask
    ref, cur = frames()
    (tmp_path / "ref").mkdir()
    ref.to_parquet(tmp_path / "ref" / "0.parquet")
    hostile("a glob that matches no file, as the current window")
    with pytest.raises(ValidationError, match=r"No files match .*cur-2026-13-\*\.parquet") as e:
        drift_dask(str(tmp_path / "ref"), str(tmp_path / "cur-2026-13-*.parquet"), scheduler=client)
    assert "no rows" not in str(e.value)  # not an empty window: a wrong path
    hostile("a glob that matches no file, as the reference")
    with pytest.raises(ValidationError, match=r"No files match"):
        drift_dask(str(tmp_path / "nothing" / "*.parquet"), cur, scheduler=client)


BAD = {"NaN": math.nan, "inf": math.inf, "negative": -5.0, "null": None, "text": "12", "true": True}


@pytest.mark.hostile
@pytest.mark.parametrize("figure", ["wall_s", "cpu_s", "peak_rss_mb", "kwh", "co2e_kg", "gpu_s"])
def test_a_cost_record_with_a_figure_that_is_not_a_number(figure, hostile):
    "A record.json or run status edited by hand, or written by a broken counter: the figure is unknown, never a number."
    good = Cost(wall_s=60, cpu_s=50, peak_rss_mb=300, gpu_s=20, gpu_mem_mb=900, kwh=0.5, co2e_kg=0.2,
                parts={"cpu": 0.5}, counters={"kwh": "estimated: x"}, host="node0")
    for name, value in BAD.items():
        hostile(f"cost.{figure} = {name}")
        c = Cost.from_dict(json.loads(json.dumps(good.to_dict() | {figure: value})))
        assert getattr(c, figure) is None, (figure, name)  # not counted as a figure
        assert f"cost.{figure}" not in c.names()
        if not (figure == "gpu_s" and value is None):  # no GPU figure is what a machine without a GPU records
            assert "not a number" in c.counters[figure], c.counters
        cells = " ".join(re.findall(r"<td>([^<]*)</td>", c._repr_html_()))  # the figures (not what counters say)
        for shown in (str(c), repr(c), cells, gain_line(c), gain_html(c, {"accuracy": .9}, {"accuracy": .8})):
            assert "nan" not in shown and "inf" not in shown and "-5" not in shown, shown
        both = total([c, good])  # one process's unknown figure makes the total's unknown: never a partial sum
        assert all(math.isfinite(v) for v in both.names().values()), both
        if figure in ("wall_s", "cpu_s", "peak_rss_mb"):
            assert getattr(both, figure) is None and "1 of 2 processes" in both.counters[figure]
        str(both), both._repr_html_()
    hostile(f"a meter's counter that reset: cost.{figure} below 0")
    measured = Cost(**{figure: -1.0, "gpu_mem_mb": 900})
    assert getattr(measured, figure) is None and f"cost.{figure}" not in measured.names(sep="/")  # W&B never gets it


@pytest.mark.hostile
def test_a_partition_that_cannot_be_read_is_named(client, tmp_path, hostile):
    "A file without a column the others have, or not parquet at all: the error names the partition and the dataset."
    from fmops_nb.dask_drift import drift_dask
    from fmops_nb.errors import ExecutionError
    ref, cur = frames()
    for name, odd in (("lacks-b", lambda p: ref.iloc[150:][["a"]].to_parquet(p)),
                      ("not-parquet", lambda p: p.write_bytes(b"PAR1 this is a csv file really"))):
        hostile(f"a parquet folder whose second file {name}")
        (tmp_path / name).mkdir()
        ref.iloc[:150].to_parquet(tmp_path / name / "0.parquet")
        odd(tmp_path / name / "1.parquet")
        with pytest.raises(ExecutionError, match=rf"partition 1 of {tmp_path / name}\b.*Nothing was merged"):
            drift_dask(str(tmp_path / name), cur, scheduler=client)


@pytest.fixture
def not_a_scheduler():
    "Start a TCP service on 127.0.0.1 that is no Dask scheduler: silent (a web dashboard, a database) or with a banner."
    import socket
    import threading
    servers, done = [], threading.Event()

    def start(greeting: bytes | None) -> str:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        servers.append(s)

        def serve():
            conns = []
            while not done.is_set():
                try:
                    c, _ = s.accept()
                except OSError:
                    break
                conns.append(c)  # kept open: the caller waits on it
                if greeting:
                    c.sendall(greeting)
        threading.Thread(target=serve, daemon=True).start()
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"
    yield start
    done.set()
    for s in servers:
        s.close()


@pytest.mark.hostile
def test_an_address_that_is_no_dask_scheduler_is_a_clear_error(client, not_a_scheduler, hostile):
    from fmops_nb.dask_drift import dask_client
    from fmops_nb.errors import ExecutionError
    with dask_client(client.scheduler.address, timeout=5) as c:  # a real scheduler greets: it is accepted
        assert len(c.scheduler_info()["workers"]) == 2
    for what, greeting in (("a silent service (the dashboard's port, a database's)", None),
                           ("an SSH server's banner", b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n" * 4)):
        hostile(f"--scheduler pointing at {what}")
        address = not_a_scheduler(greeting)
        with pytest.raises(ExecutionError, match=rf"{address}.*(not answer as a Dask scheduler|nothing was computed)"):
            with dask_client(address, timeout=1):
                pass


def test_urls_libpq_reads_are_still_accepted():
    "What libpq reads is still accepted by the checks that refuse a broken URL: several hosts, a socket, options."
    from fmops_nb.postgres import check_url, mask_url
    for url in ("postgresql://team:pw@db1:5432,db2:5432/fmops?target_session_attrs=read-write",
                "postgresql:///fmops?host=/var/run/postgresql", "postgres://team@db/fmops?sslmode=require"):
        assert check_url(url) == url
    assert mask_url("postgresql://team:pw@db1:5432,db2:5432/fmops") == "postgresql://team:***@db1:5432,db2:5432/fmops"


@pytest.mark.hostile
def test_a_closed_client_is_a_clear_error(client, hostile):
    "A notebook's `client` after `client.close()` (or after its cluster shut down), passed again."
    from distributed import Client
    from fmops_nb.dask_drift import drift_dask
    from fmops_nb.errors import ExecutionError
    hostile("a closed distributed.Client as the scheduler")
    ref, cur = frames()
    c = Client(client.cluster)  # a second client of the module's cluster (no second cluster started in-process)
    c.close()
    with pytest.raises(ExecutionError, match=r"The Dask client .* is closed.*Client\("):
        drift_dask(ref, cur, scheduler=c)


def test_fmops_config_never_prints_the_database_password(tmp_path, monkeypatch, capsys, hostile):
    "`fmops config`, `--json` and `fmops config db.url` all show the URL with its password masked."
    from fmops_nb.cli import main
    hostile("fmops config --json and fmops config db.url with a password in FMOPS_DB_URL")
    ws = Workspace.open()  # the test's own workspace, its settings file holding the URL
    ws.config_path.write_text('[db]\nurl = "postgresql://fmops:S3CRET-pw@127.0.0.1:1/team"\n[monitor]\n'
                              'webhook_url = "https://hooks.example.com/services/T0/B0/S3CRET-token"\n')
    for argv in (["config"], ["config", "--json"], ["config", "db.url"], ["config", "db.url", "--json"],
                 ["config", "monitor.webhook_url"]):
        main(argv)
        out = capsys.readouterr().out
        assert ("127.0.0.1:1/team" in out or "hooks.example.com/***" in out) and "S3CRET" not in out, (argv, out)
    ws.config_path.write_text('[monitor]\nwebhook_url = "ftp://hooks.example.com/S3CRET-token"\n')
    with pytest.raises(ConfigError) as e:  # the refusal names the URL without its token
        Workspace.open().config
    assert "ftp://hooks.example.com/***" in str(e.value) and "S3CRET" not in str(e.value)
