"""The fast integrity hash (issue 13): every tensor's BLAKE3 digest is recorded at registration next to its SHA-256,
and a diff checks the tensors it reads with BLAKE3 where it is recorded, SHA-256 otherwise. Tampering is still caught;
versions registered before BLAKE3 was recorded still diff, checked with SHA-256."""
import hashlib
import json
import os
import sqlite3
import time
from types import SimpleNamespace

import blake3
import numpy as np
import pytest

import fmops_nb.diff as D
from fmops_nb.diff import diff
from fmops_nb.errors import CorruptBlobError
from fmops_nb.registry import Registry, verify_audit

RNG = np.random.default_rng(0)
BIG = 5 * 2**20 // 4  # float32 elements of a 5 MB tensor: several blocks, and more than one run of pages handed back


def st_file(path, tensors: dict):
    "A real safetensors file, written by safetensors itself."
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))
    return path


def pair(tmp_path, reg: Registry, model: str = "h"):
    "Two versions of a model: `big` (multi-block float32) and `half` (float16) changed, `same` unchanged."
    rng = np.random.default_rng(0)
    a = {"big": rng.standard_normal(BIG + 1000).astype(np.float32), "half": rng.standard_normal(999).astype(np.float16),
         "same": np.arange(10, dtype=np.int64)}
    b = dict(a, big=a["big"] + rng.standard_normal(BIG + 1000).astype(np.float32) * 1e-3,
             half=(a["half"] * 2).astype(np.float16))
    v1 = reg.register(model, st_file(tmp_path / f"{model}1.safetensors", a))
    v2 = reg.register(model, st_file(tmp_path / f"{model}2.safetensors", b), parent=v1.id)
    return a, b, v1, v2


def blob(reg: Registry, v):
    return reg.blobs.path(v.files["model.safetensors"]["sha256"])


def flip(reg: Registry, v, name: str, at: int = -1):
    "Flip one byte of tensor `name` in the stored blob of `v` (`at`: its offset in the tensor; -1: the last byte)."
    t = reg.tensors(v)[("model.safetensors", name)]
    p = blob(reg, v)
    os.chmod(p, 0o644)
    raw = bytearray(p.read_bytes())
    raw[(t["end"] - 1) if at < 0 else t["begin"] + at] ^= 0x01
    p.write_bytes(bytes(raw))


def counting_blake3(monkeypatch) -> list:
    "Count the BLAKE3 hashers the diff makes."
    made = []
    monkeypatch.setattr(D, "blake3", SimpleNamespace(blake3=lambda *a, **k: made.append(1) or blake3.blake3(*a, **k)))
    return made


def registered_before_blake3(monkeypatch):
    "Register as fmops did before BLAKE3 was recorded: the manifest's tensor entries hold SHA-256 only."
    store = Registry._store_weights

    def old(self, got, headers):
        stored, tensors = store(self, got, headers)
        return stored, {k: {f: x for f, x in t.items() if f != "blake3"} for k, t in tensors.items()}
    monkeypatch.setattr(Registry, "_store_weights", old)


def test_recorded_digests_are_those_of_each_tensors_bytes(tmp_path):
    from safetensors import safe_open
    tensors = {"f32": RNG.standard_normal((3, 5)).astype(np.float32), "f16": np.ones(7, np.float16),
               "f64": np.linspace(0, 1, 9), "i8": np.arange(-4, 4, dtype=np.int8), "u8": np.arange(3, dtype=np.uint8),
               "flags": np.array([True, False, True]), "empty": np.zeros((0, 4), np.float32),
               "big": RNG.standard_normal(BIG).astype(np.float32)}
    f = st_file(tmp_path / "m.safetensors", tensors)
    reg = Registry(log=False)
    v = reg.register("m", f)
    recorded = reg.tensors(v)
    with safe_open(str(f), framework="numpy") as g:  # the bytes as safetensors itself reads them
        for name in tensors:
            data = g.get_tensor(name).tobytes()
            t = recorded[("model.safetensors", name)]
            assert t["blake3"] == blake3.blake3(data).hexdigest(), name
            assert t["sha256"] == hashlib.sha256(data).hexdigest(), name
    manifest = json.loads(reg.blobs.path(v.manifest).read_bytes())
    assert {t["name"]: t["blake3"] for t in manifest["tensors"]} == {n: t["blake3"] for (_, n), t in recorded.items()}
    con = sqlite3.connect(reg.ws.db_path)  # the database keeps SHA-256 only: its schema, and older tools, unchanged
    assert "blake3" not in [c[1] for c in con.execute("PRAGMA table_info(tensors)")]
    con.close()
    assert verify_audit(reg.ws).ok


def test_diff_checks_with_blake3_and_its_numbers_are_exact(tmp_path, monkeypatch):
    reg = Registry(log=False)
    a, b, v1, v2 = pair(tmp_path, reg)
    made = counting_blake3(monkeypatch)
    d = diff(v1.id, v2.id, reg)
    assert len(made) == 4  # two changed tensors, each side checked with BLAKE3 (the unchanged one is not read)
    got = {t.name: t for t in d.tensors}
    assert got["same"].change == "same" and d.cost["skipped_by_hash"] == 1
    for name in ("big", "half"):
        x, y = a[name].astype(np.float64), b[name].astype(np.float32).astype(np.float64)
        delta = y - x
        t = got[name]
        assert t.change == "changed" and t.numel == len(x)
        assert t.norm_a == pytest.approx(np.linalg.norm(x), rel=1e-6)
        assert t.norm_delta == pytest.approx(np.linalg.norm(delta), rel=1e-5)
        assert t.cosine == pytest.approx(x @ y / np.linalg.norm(x) / np.linalg.norm(y), rel=1e-6)
        assert t.changed_share == np.count_nonzero(a[name] != b[name]) / len(x)


@pytest.mark.hostile
@pytest.mark.parametrize("where", ["first byte", "last byte of a multi-block tensor"])
def test_a_flipped_byte_is_caught_with_both_hashes_recorded(tmp_path, hostile, where):
    reg = Registry(log=False)
    _, _, v1, v2 = pair(tmp_path, reg)
    assert all("blake3" in t for t in reg.tensors(v2).values())
    hostile(f"one bit of a stored tensor flipped ({where})")
    flip(reg, v2, "big", 0 if where == "first byte" else -1)
    with pytest.raises(CorruptBlobError, match=r"^Tensor 'big' of h:v2 is corrupted: its bytes no longer match the "
                                               r"hash recorded at registration\. Restore"):
        diff(v1.id, v2.id, reg)
    flip(reg, v2, "big", 0 if where == "first byte" else -1)  # put it back: the diff reads it again
    assert len(diff(v1.id, v2.id, reg).changed_tensors) == 2
    hostile("a flipped bit in the older version of the pair")
    flip(reg, v1, "half", 3)
    with pytest.raises(CorruptBlobError, match="Tensor 'half' of h:v1 is corrupted"):
        diff(v1.id, v2.id, reg)


@pytest.mark.hostile
def test_editing_the_recorded_digest_does_not_let_a_tampered_tensor_through(tmp_path, hostile):
    reg = Registry(log=False)
    _, _, v1, v2 = pair(tmp_path, reg)
    flip(reg, v2, "big")
    t = reg.tensors(v2)[("model.safetensors", "big")]
    tampered = blob(reg, v2).read_bytes()[t["begin"]:t["end"]]
    man_path = reg.blobs.path(v2.manifest)
    man = json.loads(man_path.read_bytes())
    for x in man["tensors"]:
        if x["name"] == "big": x["blake3"] = blake3.blake3(tampered).hexdigest()
    doctored = json.dumps(man, sort_keys=True).encode()

    hostile("the BLAKE3 digest in the manifest edited in place to match tampered bytes")
    os.chmod(man_path, 0o644)
    man_path.write_bytes(doctored)
    with pytest.raises(CorruptBlobError, match=r"The manifest of h:v2 \(blob [0-9a-f]{12}\) is corrupted"):
        diff(v1.id, v2.id, reg)

    hostile("the doctored manifest stored under its own hash and the version pointed at it with SQL")
    sha = reg.blobs.put_bytes(doctored)
    with sqlite3.connect(reg.ws.db_path, isolation_level=None) as con:
        con.execute("UPDATE versions SET manifest=? WHERE id='h:v2'", (sha,))
    # The same power (writing the database and the store) rewrote SHA-256 before BLAKE3 existed; the audit log, which
    # records each version's manifest hash, names it either way.
    assert "version h:v2's manifest is not the one registered" in "\n".join(verify_audit(reg.ws).problems)


@pytest.mark.hostile
@pytest.mark.parametrize("bad", ["", "0" * 64, 12345, ["a"]])
def test_a_malformed_recorded_digest_fails_closed(tmp_path, hostile, bad):
    reg = Registry(log=False)
    _, _, v1, v2 = pair(tmp_path, reg)
    man = json.loads(reg.blobs.path(v2.manifest).read_bytes())
    for x in man["tensors"]:
        if x["name"] == "half": x["blake3"] = bad
    hostile(f"a manifest whose BLAKE3 digest is {bad!r}")
    sha = reg.blobs.put_bytes(json.dumps(man, sort_keys=True).encode())
    with sqlite3.connect(reg.ws.db_path, isolation_level=None) as con:
        con.execute("UPDATE versions SET manifest=? WHERE id='h:v2'", (sha,))
    with pytest.raises(CorruptBlobError, match="Tensor 'half' of h:v2 is corrupted"):
        diff(v1.id, v2.id, reg)


def test_versions_registered_before_blake3_still_diff_checked_with_sha256(tmp_path, monkeypatch, hostile):
    reg = Registry(log=False)
    with monkeypatch.context() as m:
        registered_before_blake3(m)
        a, b, o1, o2 = pair(tmp_path, reg, "old")
    assert not any("blake3" in t for v in (o1, o2) for t in reg.tensors(v).values())
    assert not any("blake3" in t for t in json.loads(reg.blobs.path(o2.manifest).read_bytes())["tensors"])
    assert verify_audit(reg.ws).ok
    _, _, n1, n2 = pair(tmp_path, reg, "new")  # the same weights registered now
    made = counting_blake3(monkeypatch)
    old, new = diff(o1.id, o2.id, reg), diff(n1.id, n2.id, reg)
    assert len(made) == 4  # the new pair only: the old pair was checked with SHA-256
    assert [(t.name, t.change, t.norm_delta, t.cosine) for t in old.tensors] == \
        [(t.name, t.change, t.norm_delta, t.cosine) for t in new.tensors]
    made.clear()
    assert len(diff(o1.id, n2.id, reg).changed_tensors) == 2 and len(made) == 2  # a mixed pair: each side its own
    hostile("a flipped bit in a version registered before BLAKE3 was recorded")
    flip(reg, o2, "big")
    with pytest.raises(CorruptBlobError, match="Tensor 'big' of old:v2 is corrupted"):
        diff(o1.id, o2.id, reg)


@pytest.mark.hostile
def test_a_cut_short_or_missing_blob_is_named_not_a_crash(tmp_path, hostile):
    reg = Registry(log=False)
    _, _, v1, v2 = pair(tmp_path, reg)
    p = blob(reg, v2)
    good = p.read_bytes()
    hostile("a stored blob cut short in the middle of a tensor")
    os.chmod(p, 0o644)
    p.write_bytes(good[:len(good) - 3 * 2**20])  # into `big`, and `half` (after it in the file) is gone
    with pytest.raises(CorruptBlobError, match="Tensor '(big|half)' of h:v2 is corrupted"):
        diff(v1.id, v2.id, reg)
    hostile("a stored blob emptied")
    p.write_bytes(b"")
    with pytest.raises(CorruptBlobError, match="of h:v2 is corrupted"):
        diff(v1.id, v2.id, reg)
    hostile("a stored blob deleted")
    p.unlink()
    with pytest.raises(CorruptBlobError, match=r"The model\.safetensors of h:v2 \(blob [0-9a-f]{12}\) is missing"):
        diff(v1.id, v2.id, reg)


def test_a_long_diff_shows_a_bar_of_the_bytes_compared(tmp_path, monkeypatch):
    reg = Registry(log=False)
    _, _, v1, v2 = pair(tmp_path, reg)
    bars = []

    class Bar:
        n = 0
        def __init__(self, total, desc, **kw): self.total, self.desc, self.closed = total, desc, False; bars.append(self)
        def update(self, k): self.n += k
        def close(self): self.closed = True
    monkeypatch.setattr(D, "progress", Bar)
    assert diff(v1.id, v2.id, reg) and bars == []  # quick: no bar, not even tqdm imported for it
    pair_ = D._pair
    monkeypatch.setattr(D, "_pair", lambda *a: time.sleep(0.7) or pair_(*a))  # two tensors, one after the other
    monkeypatch.setattr(D.os, "cpu_count", lambda: 1)
    d = diff(v1.id, v2.id, reg)
    assert len(d.changed_tensors) == 2 and len(bars) == 1
    assert bars[0].total == d.cost["bytes_read"] == bars[0].n and bars[0].closed
