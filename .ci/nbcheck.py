"""Notebook hygiene that nbdev does not check: every markdown cell closes the code fences it opens.

A fence left open swallows the cells after it when the notebook is rendered (the README, the docs), and a `%%fmops`
line typed into a fence splits the example in two. Run: python .ci/nbcheck.py [NOTEBOOK ...] (default: nbs/ and
templates/). Exit status 1 names each cell.
"""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")


def open_fence(text: str) -> str | None:
    "The fence a markdown text leaves open, or None."
    opened = None
    for line in text.splitlines():
        m = FENCE.match(line)
        if not m:
            continue
        mark = m.group(1)
        if opened is None:
            opened = mark
        elif mark[0] == opened[0] and len(mark) >= len(opened) and not line.strip()[len(mark):].strip():
            opened = None
    return opened


def problems(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    out = []
    for i, c in enumerate(cells):
        src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        if c["cell_type"] == "markdown" and (f := open_fence(src)):
            first = src.strip().splitlines()[0][:60] if src.strip() else ""
            out.append(f"{path.relative_to(ROOT)}: markdown cell {i} ({first!r}) leaves a {f} fence open")
    return out


if __name__ == "__main__":
    paths = [Path(p).resolve() for p in sys.argv[1:]] or sorted([*(ROOT / "nbs").glob("*.ipynb"), *(ROOT / "templates").glob("*.ipynb")])
    found = [p for path in paths for p in problems(path)]
    print("\n".join(found) or f"{len(paths)} notebooks: every code fence in markdown is closed")
    sys.exit(1 if found else 0)
