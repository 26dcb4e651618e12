"""The `fmops` command, the `%fmops` magic and report reruns against hostile or mistaken input: each refusal is one
line that says what was wrong (no traceback), with the exit status a script can branch on, and nothing stored
changes."""
import json, shutil
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from fmops_nb import reports
from fmops_nb.cli import main
from fmops_nb.core import Workspace
from fmops_nb.errors import ValidationError
from test_hostile_reports import listing, template, tick


@pytest.fixture
def shell(tmp_path, monkeypatch):
    monkeypatch.setenv("FMOPS_HOME", str(tmp_path / "ws"))
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "fmops_nb")
    yield ip
    ip.run_line_magic("unload_ext", "fmops_nb")
    InteractiveShell.clear_instance()


def test_a_flag_written_before_its_command_is_answered_with_where_it_goes(tmp_path, capsys):
    rc = main(["-w", str(tmp_path / "ws"), "--json", "report", "ls"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "did you mean --json?" not in err  # the flag is right; its place is not
    assert "--json goes after the command that takes it: `fmops report ls --json`" in err
    assert main(["-w", str(tmp_path / "ws"), "report", "ls", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.hostile
def test_slices_of_a_damaged_file_or_a_value_that_is_no_table_is_one_line(tmp_path, capsys, shell, hostile):
    files = {"bad.csv": 'a,b\n1,2,3,4\n"x\n', "bad.parquet": "garbage\n", "bad.jsonl": '{"a":\n'}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        hostile(f"fmops slices on a damaged {name}")
        rc = main(["-w", str(tmp_path / "ws"), "slices", str(tmp_path / name), "--slice-by", "a"])
        err = capsys.readouterr().err
        assert rc == 1, err
        assert err.startswith("fmops: error: Cannot read ") and name in err and len(err.splitlines()) == 1
    shell.user_ns["n"] = 5
    hostile("%fmops slices of a notebook variable holding an int")
    with pytest.raises(UsageError, match="Cannot measure slices on a int"):
        shell.run_line_magic("fmops", "slices n --slice-by a")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    "A finished run of a one-value template, and its workspace."
    root = tmp_path_factory.mktemp("rerun")
    ws = Workspace.open(root / "ws")
    run = reports.run_report(tick(root), {"n": 3}, ws=ws, log=False)
    assert run.status == "finished" and run.values == {"twice": 6}
    return ws, run


@pytest.mark.hostile
@pytest.mark.parametrize("change, said", [
    (lambda d: (d / "values.json").write_text(json.dumps({"twice": 999})), "values.json"),
    (lambda d: (d / "values.json").unlink(), "values.json"),
    (lambda d: (d / "params.json").write_text(json.dumps({"n": 5})), "params.json"),
    (lambda d: (d / "output.ipynb").write_text((d / "output.ipynb").read_text().replace("twice", "thrice")),
     "output.ipynb"),
])
def test_a_rerun_of_a_run_folder_changed_after_the_run_says_so_and_runs_nothing(finished, change, said, hostile,
                                                                                  tmp_path):
    ws, run = finished
    d = tmp_path / run.dir.parent.name / run.dir.name  # a copy of the run's folder, changed
    shutil.copytree(run.dir, d)
    change(d)
    hostile(f"a report run folder whose {said} was changed or removed after the run")
    before = listing(ws.reports_dir / "tick")
    with pytest.raises(ValidationError, match=f"{said}.*changed after the run") as e:
        reports.rerun(str(d), ws, log=False)
    assert "not deterministic" not in str(e.value)
    assert listing(ws.reports_dir / "tick") == before  # no rerun was started


def test_a_rerun_of_an_untouched_run_still_reproduces_it(finished):
    ws, run = finished
    rr = reports.rerun(run.id, ws, log=False)
    assert rr.same, repr(rr)


@pytest.mark.hostile
def test_terminal_escapes_in_a_failed_reports_error_are_printed_inert(tmp_path, capsys, hostile):
    esc = "\x1b]0;pwned\x07 \x1b[2J \x9b31m"  # set the window title, clear the screen, a C1 control sequence
    tpl = template(tmp_path / "esc.ipynb", "n: int = 1", f"raise ValueError({esc!r} + '\\nsecond line')")
    hostile("a report cell whose error message holds terminal escapes and a newline")
    w = ["-w", str(tmp_path / "ws")]
    assert main([*w, "report", "run", str(tpl), "--no-wandb"]) == 1
    out, err = capsys.readouterr()
    run_id = next(line.split()[1].rstrip(':') for line in out.splitlines() if line.startswith("Report esc/"))
    assert main([*w, "report", "ls"]) == 0
    ls = capsys.readouterr().out
    assert main([*w, "report", "show", run_id]) == 0
    show = capsys.readouterr().out
    for text in (out, err, ls, show):
        assert not set(text) & {"\x1b", "\x07", "\x9b"}, repr(text)
    assert "\\x1b]0;pwned\\x07" in err and "\\x1b]0;pwned\\x07" in ls and "\\x1b]0;pwned\\x07" in show
    assert len([line for line in ls.splitlines() if line.startswith("esc/")]) == 1  # one line per run


@pytest.mark.hostile
def test_a_fmops_cell_body_is_read_as_a_spec_file_is_without_anchors_tags_or_depth(shell, hostile):
    import pandas as pd
    shell.user_ns["df"] = pd.DataFrame({"text": ["a b", "c d"] * 10, "label": [0, 1] * 10})
    levels = ['&l0 ["x","x","x","x","x","x","x","x"]'] + [f"&l{i} [" + ",".join([f"*l{i - 1}"] * 8) + "]"
                                                         for i in range(1, 4)]
    bodies = {"a YAML alias bomb in script_args": ("base: minilm\ntrain: df\nscript_args: [" + ", ".join(levels)
                                                    + "]\n", "alias"),
              "a python tag": ("base: minilm\ntrain: df\nname: !!python/name:os.system\n", "tag"),
              "lists nested 40 deep": ("base: minilm\ntrain: df\nscript_args: " + "[" * 40 + "]" * 40 + "\n", "deep")}
    for what, (body, says) in bodies.items():
        hostile(f"%%fmops finetune with {what}")
        with pytest.raises(UsageError, match=says) as e:
            shell.run_cell_magic("fmops", "finetune", body)
        assert len(str(e.value)) < 1000  # the message names the problem; it does not spell the value out


def test_p_gives_a_text_parameter_the_text_as_typed_when_yaml_would_read_something_else(tmp_path, capsys):
    tpl = template(tmp_path / "words.ipynb", "a: str = 'x'\nb: str = 'y'\nc: str = 'z'\nd: str = 'w'\ne: str = 'v'\n"
                   "f: str = 'u'\nn: int = 1", "from fmops_nb.reports import record\nrecord('got', [a, b, c, d, e, f, n])")
    # '' (the empty value a template documents), YAML 1.1's `no`, a version string, a quoted text, a `#` that YAML
    # reads as a comment, a line break YAML folds into a space, a number
    rc = main(["-w", str(tmp_path / "ws"), "report", "run", str(tpl), "-p", "a", "", "-p", "b", "no",
               "-p", "c", "1.10", "-p", "d", "'quoted'", "-p", "e", "run #5", "-p", "f", "two\nlines", "-p", "n", "7",
               "--no-wandb", "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert json.loads(out)["values"]["got"] == ["", "no", "1.10", "quoted", "run #5", "two\nlines", 7]
    assert main(["-w", str(tmp_path / "ws"), "report", "run", str(tpl), "-p", "n", "seven", "--no-wandb"]) == 1
    assert "Parameter 'n' must be an int, got 'seven'" in capsys.readouterr().err  # other types: read as YAML


@pytest.mark.hostile
def test_an_output_path_that_cannot_be_written_is_one_line_and_exit_1(tmp_path, capsys, hostile):
    (tmp_path / "d.csv").write_text("a\n" + "\n".join(map(str, range(40))) + "\n")
    (tmp_path / "taken").mkdir()
    (tmp_path / "plain").write_text("a file, not a folder")
    w = ["-w", str(tmp_path / "ws")]
    for args, what in (([*w, "drift", str(tmp_path / "d.csv"), str(tmp_path / "d.csv"), "--html",
                         str(tmp_path / "taken")], "drift --html to an existing folder"),
                       ([*w, "drift", str(tmp_path / "d.csv"), str(tmp_path / "d.csv"), "--html",
                         str(tmp_path / "plain" / "r.html")], "drift --html under a file"),
                       ([*w, "feedback", "export", str(tmp_path / "plain" / "f.jsonl")], "feedback export under a file")):
        hostile(f"fmops {what}")
        rc = main(args)
        err = capsys.readouterr().err
        assert rc == 1, err
        assert err.startswith("fmops: error: ") and len(err.splitlines()) == 1 and str(tmp_path) in err, err
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == [] and (tmp_path / "plain").read_text()


@pytest.mark.hostile
def test_review_with_a_count_below_one_is_a_usage_error(shell, hostile):
    import pandas as pd
    shell.user_ns["df"] = pd.DataFrame({"input": ["a", "b", "c"], "prediction": ["x", "y", "x"]})
    for n in ("-5", "0"):
        hostile(f"%fmops review df -n {n}")
        with pytest.raises(UsageError, match=f"-n {n}: .*at least 1"):
            shell.run_line_magic("fmops", f"review df --labels x,y -n {n}")


def test_a_template_named_by_its_file_name_is_found_like_its_name(tmp_path, capsys):
    assert reports.find_template("maintenance_report.ipynb") == reports.find_template("maintenance_report")
    rc = main(["-w", str(tmp_path / "ws"), "report", "run", "maintenace_report.ipynb", "--no-wandb"])
    err = capsys.readouterr().err
    assert rc == 1 and "Unknown template 'maintenace_report'" in err and "maintenance_report" in err, err
    with pytest.raises(ValidationError, match="does not exist"):  # a path to a file that is not there: as before
        reports.find_template(str(tmp_path / "maintenance_report.ipynb"))
