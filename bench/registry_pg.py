"""Registry operations with the metadata in PostgreSQL against the embedded SQLite file (issue 17, target: within 2x).

    python bench/registry_pg.py --out bench/results/registry_pg-2026-12-02.json   # ~3 minutes on 2 cores
    python bench/registry_pg.py --versions 200 --rounds 10                       # quicker (not for quoting)
    python bench/registry_pg.py --url postgresql://fmops@db.internal/fmops_bench  # an existing (empty) database

Without --url it starts its own PostgreSQL server (Debian's postgresql package: `initdb` in a temporary folder, run
as the `postgres` user when started by root, listening on 127.0.0.1 only, durable settings: fsync on, like SQLite's
synchronous=FULL) and stops it by its pid at the end.
Two fresh workspaces (keyed audit log, W&B off), one on each backend, a small safetensors file (two tensors):
  register   `Registry.register` of a new version
  promote    `Registry.promote` of a version to `production`
  ls         `Registry.versions(model)` of a model with `--versions` versions, what `fmops registry ls` reads
Each operation runs `--rounds` times on SQLite then PostgreSQL in turn, so the load of a shared machine hits both
alike. Reported: per backend the median seconds, the median of the paired ratios (PostgreSQL / SQLite), every run,
the 1-minute load average before and after, CPU count.
Prints JSON; --out writes it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def start_server(folder: Path) -> tuple[subprocess.Popen, str]:
    "A PostgreSQL server in `folder` on a free 127.0.0.1 port; returns the process and its URL."
    bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    if not bindir:
        sys.exit("PostgreSQL's server is not installed (apt-get install postgresql), or pass --url.")
    bindir = bindir[-1].parent
    run_as = {}
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        run_as = dict(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run([bindir / "initdb", "-D", folder / "data", "--auth=trust", "-U", "fmops", "-E", "UTF8",
                           "--no-instructions"], capture_output=True, cwd=folder, **run_as)
    if done.returncode:
        raise SystemExit(f"initdb failed: {done.stderr.decode()[-2000:]}")
    log = open(folder / "server.log", "wb")
    proc = subprocess.Popen([bindir / "postgres", "-D", folder / "data", "-p", str(port), "-k", folder,
                             "-c", "listen_addresses=127.0.0.1"], stdout=log, stderr=subprocess.STDOUT, cwd=folder,
                            **run_as)
    url = f"postgresql://fmops@127.0.0.1:{port}/postgres"
    import psycopg
    deadline = time.monotonic() + 60
    try:
        while True:  # ready when it accepts a connection
            if proc.poll() is not None:
                raise SystemExit((folder / "server.log").read_text()[-2000:])
            try:
                psycopg.connect(url, connect_timeout=2).close()
                return proc, url
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def paired(fns: dict, rounds: int) -> dict:
    "Time each backend's call in turn, `rounds` times: a load burst on the shared machine hits both alike."
    out = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            out[name].append(time.perf_counter() - t)
    return out


def bench(url: str, folder: Path, versions: int, rounds: int) -> dict:
    "The three operations on both backends, each in a fresh workspace, interleaved."
    from safetensors.numpy import save_file
    from fmops_nb.core import Workspace
    from fmops_nb.registry import Registry
    weights = folder / "w.safetensors"
    save_file({"w": np.ones((64, 64), np.float32), "b": np.zeros(64, np.float32)}, str(weights))
    (folder / "postgres").mkdir()
    (folder / "postgres" / "config.toml").write_text(f"[db]\nurl = {json.dumps(url)}\n")
    regs = {b: Registry(Workspace.open(folder / b), log=False) for b in ("sqlite", "postgres")}
    assert regs["postgres"].ws.db_url == url and not regs["sqlite"].ws.db_url
    load = os.getloadavg()[0]
    times = {"register": paired({b: (lambda r=r: r.register("bench", weights, metrics={"accuracy": 0.9}))
                                 for b, r in regs.items()}, rounds)}
    ids = {b: iter([v.id for v in r.versions("bench")] * 2) for b, r in regs.items()}
    times["promote"] = paired({b: (lambda r=r, b=b: r.promote(next(ids[b]), to="production", reason="bench"))
                               for b, r in regs.items()}, rounds)
    fill = {}
    for b, r in regs.items():  # the listed model (not timed); the same weights each time: the blobs dedupe
        t = time.perf_counter()
        for _ in range(versions):
            r.register("many", weights)
        fill[b] = round(time.perf_counter() - t, 1)
    times["ls"] = paired({b: (lambda r=r: r.versions("many")) for b, r in regs.items()}, rounds)
    assert all(len(r.versions("many")) == versions for r in regs.values())
    return {"load_1min_before": load, "load_1min_after": os.getloadavg()[0], "fill_s": fill,
            **{op: {"sqlite_s": statistics.median(t["sqlite"]), "postgres_s": statistics.median(t["postgres"]),
                    "ratio": round(statistics.median(p / s for s, p in zip(t["sqlite"], t["postgres"])), 2),
                    "runs": t} for op, t in times.items()}}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="an existing, empty PostgreSQL database (default: start a server here)")
    ap.add_argument("--versions", type=int, default=1000, help="versions of the model `ls` lists")
    ap.add_argument("--rounds", type=int, default=15, help="timed runs of each operation")
    ap.add_argument("--out", help="write the JSON here")
    args = ap.parse_args()
    os.environ.setdefault("FMOPS_AUDIT_KEY", "bench-" + "k" * 26)
    os.environ["WANDB_MODE"] = "disabled"
    os.environ.pop("FMOPS_DB_URL", None)  # each workspace says which database it uses
    folder = Path(tempfile.mkdtemp(prefix="fmops-bench-pg-"))
    pgdir = Path(tempfile.mkdtemp(prefix="fmops-bench-pgdata-"))  # its own folder: the server's user must enter it
    proc, url = None, args.url
    try:
        if not url:
            proc, url = start_server(pgdir)
        res = bench(url, folder, args.versions, args.rounds)
    finally:
        from fmops_nb import postgres as pg
        with pg._POOL_LOCK:
            while pg._POOL:
                pg._POOL.pop()[1].close()
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(pgdir, ignore_errors=True)
    import psycopg
    out = {"versions": args.versions, "rounds": args.rounds, "cpus": os.cpu_count(),
           "python": platform.python_version(),
           "psycopg": psycopg.__version__, "server": "own (127.0.0.1, fsync on)" if proc else "--url",
           "ratio_pg_over_sqlite": {op: res[op]["ratio"] for op in ("register", "promote", "ls")}, **res}
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
