"""README.md is rendered from nbs/index.ipynb. `--check` fails when they differ; `--test-command` prints the README's test command."""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def render() -> str:
    nb = json.loads((ROOT / "nbs" / "index.ipynb").read_text())
    parts = []
    for c in nb["cells"]:
        src = "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        if c["cell_type"] == "markdown":
            parts.append(src.strip())
        elif c["cell_type"] == "code" and not re.search(r"^#\|\s*(hide|exporti?)\b", src, re.M):
            code = "\n".join(l for l in src.splitlines() if not l.startswith("#|")).strip()
            if code:
                parts.append(f"```python\n{code}\n```")
    return "<!-- Rendered from nbs/index.ipynb by .ci/readme.py: edit the notebook, then run `python .ci/readme.py`. -->\n\n" + "\n\n".join(parts) + "\n"


def test_command(text: str) -> str:
    m = re.search(r"Install and run the tests.*?```sh\n(.+?)\n```", text, re.S)
    if not m:
        sys.exit("README.md has no test command under 'Install and run the tests'")
    return m[1].strip()


if __name__ == "__main__":
    readme = ROOT / "README.md"
    if "--test-command" in sys.argv:
        print(test_command(readme.read_text()))
    elif "--check" in sys.argv:
        if not readme.exists() or readme.read_text() != render():
            sys.exit("README.md differs from nbs/index.ipynb: run `python .ci/readme.py` and commit README.md")
    else:
        readme.write_text(render())
