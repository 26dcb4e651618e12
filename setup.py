"""The one compiled part of fmops_nb (everything else is in pyproject.toml): the drift engine's grid-counting loop.

Optional: where no C compiler is, the install goes on without it and the engine runs its numpy loop, which gives the
same counts (nbs/11_drift.ipynb).
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("fmops_nb._grid", ["fmops_nb/_grid.c"], optional=True,
                             extra_compile_args=["-O3", "-ffp-contract=off"])])
