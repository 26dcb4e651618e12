"""A version diff as a person reads it: two LoRA adapters from two runs show no config change for what only looks
different (a reordered target_modules, each run's own folder), and each LoRA module is one row whose change is that
of its product ΔW = (α/r)·B·A, the number a person would compute from the two adapters."""
import json
import re
import xml.etree.ElementTree as ET

import numpy as np
from safetensors.numpy import save_file

from fmops_nb.diff import diff, lora_deltas
from fmops_nb.registry import Registry

SVG = "{http://www.w3.org/2000/svg}"


def adapter(folder, factors: dict, targets: list, run: str, r: int = 2, alpha: int = 4):
    "A PEFT LoRA adapter folder (written without peft) as fine-tune run `run` saves it: its base in the run's folder."
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": targets, "task_type": "FEATURE_EXTRACTION",
        "base_model_name_or_path": f"/home/ana/project/.fmops/runs/{run}/base", "revision": None}))
    tensors = {}
    for module, (A, B) in factors.items():
        tensors[f"base_model.model.{module}.lora_A.weight"] = A
        tensors[f"base_model.model.{module}.lora_B.weight"] = B
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return folder


def base_weights(tmp_path, g):
    "A two-layer base, registered: the weights the adapters change."
    W = {f"layers.{i}.{p}.weight": g.normal(size=(6, 6)).astype(np.float32) for i in (0, 1) for p in ("q", "v")}
    W |= {f"layers.{i}.{p}.bias": np.zeros(6, np.float32) for i in (0, 1) for p in ("q", "v")}
    path = tmp_path / "base.safetensors"
    save_file(W, str(path))
    return path, W


def factors(g, r=2):
    return {f"layers.{i}.{p}": (g.normal(size=(r, 6)).astype(np.float32), g.normal(size=(6, r)).astype(np.float32))
            for i in (0, 1) for p in ("q", "v")}


def delta(A, B, scale):
    return scale * B.astype(np.float64) @ A.astype(np.float64)


def module_rows(markup: str) -> dict:
    "The rows of the module chart by the module they name (`data-module`), with their texts."
    svg = ET.fromstring(re.search(r"<svg class='fmops-modules'.*?</svg>", markup, re.S).group(0))
    return {g.get("data-module"): ["".join(t.itertext()) for t in g.iter(f"{SVG}text")]
            for g in svg.iter(f"{SVG}g") if "fmops-module" in (g.get("class") or "")}


def test_two_lora_runs_differ_only_by_their_product_not_by_config_noise(tmp_path):
    g = np.random.default_rng(7)
    reg = Registry(log=False)
    path, W = base_weights(tmp_path, g)
    reg.register("enc", path)
    fa, fb = factors(g), factors(g, r=4)  # the second run used another rank: ΔW still has the weight's shape
    va = reg.register("enc-lora", adapter(tmp_path / "a", fa, ["q", "v"], "ft-20261201-aaaa"), base="enc:v1",
                      run_id="ft-20261201-aaaa")
    vb = reg.register("enc-lora", adapter(tmp_path / "b", fb, ["v", "q"], "ft-20261202-bbbb", r=4, alpha=8),
                      base="enc:v1", run_id="ft-20261202-bbbb")
    d = diff(va.id, vb.id, reg)
    # config: the rank and alpha changed; a reordered target_modules and each run's own base folder did not
    assert [c["key"] for c in d.config] == ["adapter.lora_alpha", "adapter.r"]
    # weights: one row per LoRA module (no lora_A / lora_B rows), its change that of ΔW = (α/r)·B·A
    mods = {m["module"]: m for m in d.modules}
    assert set(mods) == {f"base_model.model.{name}" for name in fa}
    for name, (A, B) in fa.items():
        m = mods[f"base_model.model.{name}"]
        want = np.linalg.norm(delta(*fb[name], 8 / 4) - delta(A, B, 4 / 2))
        assert m["lora"] and m["structural"] == [] and np.isclose(m["norm_delta"], want, rtol=1e-9), name
        assert np.isclose(m["rel_delta"], want / np.linalg.norm(W[f"{name}.weight"].astype(np.float64)), rtol=1e-9)
    # what the panel shows
    html = d._repr_html_()
    assert "adapter.lora_alpha" in html and "adapter.target_modules" not in html and "ft-20261201" not in html
    rows = module_rows(html)
    assert set(rows) == set(mods) and not any("lora_A" in k or "lora_B" in k for k in rows)
    assert all(any(t.endswith(" ΔW") for t in texts) for texts in rows.values())  # each labelled as a product


def test_a_new_alpha_on_the_same_factors_changes_every_delta_w(tmp_path):
    "The factors are the same bytes, the scale α/r doubled: no tensor changed, yet every ΔW did, and the chart says so."
    g = np.random.default_rng(11)
    reg = Registry(log=False)
    path, _ = base_weights(tmp_path, g)
    reg.register("enc", path)
    fa = factors(g)
    va = reg.register("enc-lora", adapter(tmp_path / "a", fa, ["q", "v"], "ft-1"), base="enc:v1", run_id="ft-1")
    vb = reg.register("enc-lora", adapter(tmp_path / "b", fa, ["q", "v"], "ft-2", alpha=8), base="enc:v1",
                      run_id="ft-2")
    d = diff(va.id, vb.id, reg)
    assert d.changed_tensors == [] and [c["key"] for c in d.config] == ["adapter.lora_alpha"]
    for m in d.modules:
        A, B = fa[m["module"].removeprefix("base_model.model.")]
        assert m["changed"] == 0 and np.isclose(m["norm_delta"], np.linalg.norm(delta(A, B, 2.0)), rtol=1e-9)
    assert set(module_rows(d._repr_html_())) == {m["module"] for m in d.modules}


def test_lora_deltas_equal_the_product_computed_directly(tmp_path):
    g = np.random.default_rng(3)
    reg = Registry(log=False)
    path, W = base_weights(tmp_path, g)
    reg.register("enc", path)
    fa = factors(g)
    v = reg.register("enc-lora", adapter(tmp_path / "a", fa, ["q", "v"], "ft-1"), base="enc:v1", run_id="ft-1")
    got = {m["module"]: m for m in lora_deltas(reg, v, reg.get("enc:v1"))}
    for name, (A, B) in fa.items():
        dw = delta(A, B, 4 / 2)
        assert np.isclose(got[name]["norm_delta"], np.linalg.norm(dw), rtol=1e-9)
        assert got[name]["rank"] == np.linalg.matrix_rank(dw) == 2
        assert np.isclose(got[name]["rel_delta"], np.linalg.norm(dw) / np.linalg.norm(W[f"{name}.weight"]), rtol=1e-6)
    d = diff("enc:v1", v.id, reg)  # an adapter against its own base: the chart rows are the adapter's ΔW
    assert d.tensors == [] and {m["module"] for m in d.modules} == set(fa)
    assert set(module_rows(d._repr_html_())) == set(fa)


def test_the_same_adapter_saved_by_two_runs_is_no_change(tmp_path):
    g = np.random.default_rng(5)
    reg = Registry(log=False)
    path, _ = base_weights(tmp_path, g)
    reg.register("enc", path)
    fa = factors(g)
    a = reg.register("enc-lora", adapter(tmp_path / "a", fa, ["q", "v"], "ft-1"), base="enc:v1", run_id="ft-1")
    b = reg.register("enc-lora", adapter(tmp_path / "b", fa, ["v", "q"], "ft-2"), base="enc:v1", run_id="ft-2")
    d = diff(a.id, b.id, reg)
    assert d.config == [] and d.changed_tensors == [] and not [m for m in d.modules if m["changed"]]
    html = d._repr_html_()
    assert "No config change." in html and "No module changed." in html
    assert "0 config changes" in d.headline()
