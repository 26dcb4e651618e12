"""Links from panels: the hidden workspace's files reached through visible copies next to the notebook, relative links
that JupyterLab resolves from the root or a sub-folder, W&B runs by address or `wandb sync`, and a report panel over a
real papermill run (its report shown inline in a sandboxed iframe)."""
import os
import stat

import nbformat
import pytest

from fmops_nb.widgets import ReportPanel, file_link, links_view, notebook_dir, visible_copy, wandb_link


@pytest.fixture
def project(tmp_path):
    "A project folder with a hidden workspace holding one report, and notebooks at the top and in a sub-folder."
    run = tmp_path / ".fmops" / "reports" / "daily drift" / "20260302-060000"
    run.mkdir(parents=True)
    (run / "report.html").write_text("<h1>daily</h1>")
    (run / "output.ipynb").write_text("{}")
    (run / "values.json").write_text('{"secret": 1}')
    (tmp_path / "team" / "weekly").mkdir(parents=True)
    return tmp_path, run


def test_a_hidden_file_is_linked_through_a_copy_next_to_the_notebook(project):
    root, run = project
    for home, href in ((root, "fmops-reports/daily%20drift/20260302-060000/report.html"),
                       (root / "team" / "weekly", "fmops-reports/daily%20drift/20260302-060000/report.html")):
        link = file_link("Report", run / "report.html", run.parent.name, run.name, home=home)
        assert link.href == href  # relative to the notebook's folder, quoted: JupyterLab resolves it from there
        assert (home / "fmops-reports" / "daily drift" / "20260302-060000" / "report.html").read_text() == "<h1>daily</h1>"
        assert sorted(p.name for p in (home / "fmops-reports").rglob("*") if p.is_file()) == ["report.html"]
    # nothing else of the workspace is copied: values, params and the other files stay hidden
    assert not list(root.rglob("fmops-reports/**/values.json"))


def test_a_copy_follows_its_source_and_a_visible_file_is_linked_where_it_is(project):
    root, run = project
    dest = visible_copy(run / "report.html", "daily drift", "20260302-060000", home=root)
    (run / "report.html").write_text("<h1>daily, rerun</h1>")
    os.utime(run / "report.html", ns=(dest.stat().st_mtime_ns + 10**9,) * 2)
    assert visible_copy(run / "report.html", "daily drift", "20260302-060000", home=root).read_text() == "<h1>daily, rerun</h1>"
    shown = root / "ws" / "reports" / "r.html"  # a workspace kept visible: no copy, a link to the file itself
    shown.parent.mkdir(parents=True)
    shown.write_text("x")
    assert file_link("Report", shown, home=root).href == "ws/reports/r.html"
    assert file_link("Report", run / "missing.html", home=root).label == "missing.html (not written)"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_notebook_folder_that_cannot_be_written_gets_no_broken_link(project):
    root, run = project
    ro = root / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        link = file_link("Report", run / "report.html", home=ro)
        assert link.href is None and "cannot be copied" in link.note
    finally:
        ro.chmod(stat.S_IRWXU)


def test_the_notebook_folder_comes_from_jupyter(monkeypatch, tmp_path):
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "sub" / "drift.ipynb"))
    assert notebook_dir() == tmp_path / "sub"
    monkeypatch.setenv("JPY_SESSION_NAME", "some-session-id")  # not a notebook's path: the working directory
    assert notebook_dir() == type(tmp_path).cwd()


def test_wandb_links_offline_and_online(tmp_path):
    a, b = tmp_path / "offline-run-20260302_060000-ft-1", tmp_path / "offline-run-20260302_070000-ft-1"
    link = wandb_link([a, b])  # a resumed offline run: one folder per process, all uploaded
    assert link.href is None and link.command == f"wandb sync {a} {b}"
    assert link.text() == f"W&B run: offline ({b.name}) {b} (run: wandb sync {a} {b})"
    on = wandb_link(tmp_path / "run-20260302_060000-x", "https://wandb.ai/team/fmops/runs/x")
    html = links_view([on]).outputs[0]["data"]["text/html"]
    assert "href='https://wandb.ai/team/fmops/runs/x' target='_blank' rel='noopener'" in html
    assert wandb_link(None) is None
    odd = wandb_link(tmp_path / "offline-run-1-<i>x y")
    assert "&lt;i&gt;x y" in links_view([odd]).outputs[0]["data"]["text/html"]  # a name is text, not markup
    assert odd.command.endswith("'") and "<i>x y" in odd.command  # quoted for a shell


@pytest.mark.slow
def test_report_panel_links_its_report_notebook_and_wandb_run_and_shows_it_sandboxed(tmp_path, isolated_workspace,
                                                                                      monkeypatch):
    from fmops_nb.reports import run_report
    pc = nbformat.v4.new_code_cell("n: int = 3  # how many"); pc.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell("from fmops_nb.reports import record\nrecord('squares', n * n)\n"
                                     "print('<script>alert(1)</script>')")
    nb = nbformat.v4.new_notebook(cells=[pc, body])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(tmp_path / "squares.ipynb"))
    r = run_report(str(tmp_path / "squares.ipynb"), {"n": 4})
    assert r.status == "finished" and r.values["squares"] == 16
    (tmp_path / "nb").mkdir()
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "nb" / "ops.ipynb"))  # the notebook, as Jupyter says it
    p = ReportPanel(r)
    rep, book, wb = p.link_list
    where = f"fmops-reports/squares/{r.dir.name}"
    assert (rep.href, book.href) == (f"{where}/report.html", f"{where}/output.ipynb")
    assert (tmp_path / "nb" / where / "report.html").read_bytes() == r.html.read_bytes()
    assert wb.command == f"wandb sync {r.wandb_run}" and os.path.isdir(r.wandb_run)
    assert "offline-run-" in r.wandb_run and str(isolated_workspace) in r.wandb_run
    html = p.links.outputs[0]["data"]["text/html"]
    assert f"<a href='{where}/report.html'" in html and f"<a href='{where}/output.ipynb'" in html
    assert p.frame.value == ""  # the report itself only on request
    p.show_button.value = True
    frame = p.frame.value
    assert frame.startswith("<iframe class='fmops-report-frame' sandbox=''") and "allow-scripts" not in frame
    assert "<script>" not in frame and "&amp;lt;script&amp;gt;alert(1)" in frame  # the page, escaped as a value
    assert p.show_button.description == "Hide the report"
    p.show(False)
    assert p.frame.value == "" and p.show_button.value is False


@pytest.mark.slow
def test_report_magic_shows_the_panel_once_even_when_the_run_is_assigned(tmp_path):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    pc = nbformat.v4.new_code_cell("n: int = 3"); pc.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[pc, nbformat.v4.new_code_cell("from fmops_nb.reports import record\n"
                                                                       "record('n', n)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(tmp_path / "tiny.ipynb"))
    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "fmops_nb")
        for cell in (f"%fmops report run {tmp_path}/tiny.ipynb --no-wandb", f"r = %fmops report run {tmp_path}/tiny.ipynb"):
            with capture_output() as shown:
                res = ip.run_cell(cell, store_history=True)
            assert res.success and len(shown.outputs) == 1, [o.data.keys() for o in shown.outputs]  # the panel, once
            assert "application/vnd.jupyter.widget-view+json" in shown.outputs[0].data
            assert "Report tiny/" not in shown.stdout  # and not its text again as the cell's value
        r = ip.user_ns["r"]
        assert r.status == "finished" and "offline-run-" in r.wandb_run
        with capture_output() as later:
            ip.run_cell("r", store_history=True)  # in a later cell: its text and HTML
        assert "fmops-report" in later.outputs[0].data["text/html"]
    finally:
        ip.run_line_magic("unload_ext", "fmops_nb")
        InteractiveShell.clear_instance()
