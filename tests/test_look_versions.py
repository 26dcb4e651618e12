"""A model's versions as a person looks at them: metrics as columns that sort (a version without the metric last),
the best value of each in bold, the picked version highlighted, and its model card rendered as Markdown in which a
`<script>` or an `<img onerror>` someone wrote stays text."""
import re

import numpy as np
from safetensors.numpy import save_file

from fmops_nb.html import card_html, panel, versions_html
from fmops_nb.registry import Registry, version_table

XSS = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"


def weights(tmp_path, name, seed):
    path = tmp_path / f"{name}.safetensors"
    save_file({"w": np.random.default_rng(seed).normal(size=(4, 4)).astype(np.float32)}, str(path))
    return path


def registry(tmp_path) -> Registry:
    reg = Registry(log=False)
    reg.register("tickets", weights(tmp_path, "a", 0), metrics={"accuracy": 0.81, "eval_loss": (0.52, "lower")})
    reg.register("tickets", weights(tmp_path, "b", 1), parent="tickets:v1", aliases=["production"],
                 metrics={"accuracy": 0.86, "eval_loss": (0.47, "lower")})
    reg.register("tickets", weights(tmp_path, "c", 2), parent="tickets:v2", metrics={"eval_loss": (0.61, "lower")})
    return reg


def rows(markup: str) -> list:
    "Each body row: its version and its cells' texts (tags stripped)."
    body = re.search(r"<tbody>(.*)</tbody>", markup, re.S).group(1)
    return [(re.search(r"data-version='(.*?)'", tr).group(1), [re.sub(r"<.*?>", "", td) for td in
             re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]) for tr in re.findall(r"<tr .*?</tr>", body, re.S)]


def test_metrics_are_columns_that_sort_and_the_picked_version_is_highlighted(tmp_path):
    reg = registry(tmp_path)
    t = version_table(reg.versions("tickets"))
    assert [m["name"] for m in t["metrics"]] == ["accuracy", "eval_loss"]
    by_acc = versions_html(t, selected="tickets:v2", sort_by="accuracy", descending=True)
    assert [v for v, _ in rows(by_acc)] == ["tickets:v2", "tickets:v1", "tickets:v3"]  # v3 has no accuracy: last
    assert [v for v, _ in rows(versions_html(t, sort_by="accuracy"))][-1] == "tickets:v3"  # last either way
    assert [v for v, _ in rows(versions_html(t, sort_by="eval_loss"))] == ["tickets:v2", "tickets:v1", "tickets:v3"]
    head = re.search(r"<thead>(.*)</thead>", by_acc, re.S).group(1)
    assert re.findall(r"data-sort='(\w+)'", head) == ["version", "format", "from", "created", "by", "accuracy",
                                                      "eval_loss"]
    assert "data-sort='accuracy' aria-sort='descending'" in head and "eval_loss: lower is better" in head
    assert "<tr data-version='tickets:v2' class='fmops-selected' aria-selected='true'>" in by_acc
    assert by_acc.count("fmops-selected") == 1
    cells = dict(rows(by_acc))
    assert cells["tickets:v2"][:4] == ["tickets:v2", "production", "safetensors", "tickets:v1"]
    assert cells["tickets:v2"][-2:] == ["0.86", "0.47"] and cells["tickets:v3"][-2:] == ["", "0.61"]
    assert by_acc.count("<td class='fmops-best'>") == 2  # the best accuracy (highest) and loss (lowest)
    assert "<td class='fmops-best'>0.47</td>" in by_acc and "<td class='fmops-best'>0.86</td>" in by_acc
    assert "style=" not in by_acc  # the look comes from the stylesheet's classes


def test_a_hostile_model_card_is_rendered_as_markdown_and_its_markup_stays_text(tmp_path):
    reg = Registry(log=False)
    v = reg.register("tickets", weights(tmp_path, "a", 0), metrics={"accuracy": 0.9},
                     description=f"Routes tickets. {XSS} **bold** and [a link](javascript:alert(3))",
                     intended_use=f"Support queues. {IMG} ![pixel](https://tracker.example/p.png)")
    card = reg.card(v)
    html = card_html(card)
    assert "<h1>tickets:v1</h1>" in html and "<h2>Intended use</h2>" in html  # Markdown, rendered
    assert "<strong>bold</strong>" in html and "<table>" in html and "<td>accuracy</td>" in html
    assert "<script" not in html and "<img" not in html  # nothing a browser would run or fetch,
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x onerror=alert(2)&gt;" in html  # as text
    assert "javascript:" not in html.replace("[a link](javascript:alert(3))", "")
    assert "tracker.example" not in html and "[image: pixel]" in html
    page = panel(html)
    assert page.count("<style>") == 1 and "<script" not in page
