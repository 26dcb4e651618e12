import pytest
"""Report templates under real papermill: typed parameters round-trip, values read back from the output notebook."""
import datetime as dt

import nbformat

from fmops_nb.reports import read_values, schema, validate


def template(path):
    params = nbformat.v4.new_code_cell(
        "from datetime import date, datetime\n"
        "day: date = date(2026, 3, 1)  # the production day\n"
        "since: datetime = datetime(2026, 3, 1, 6, 30)\n"
        "columns: list = ['a']\n"
        "limits: dict = {'psi': 0.2}\n"
        "threshold: float = 0.1\n")
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(
        "from fmops_nb.reports import typed, record\n"
        "p = typed(globals())\n"
        "record('types', {k: type(v).__name__ for k, v in p.items()})\n"
        "record('day_plus_one', (day + __import__('datetime').timedelta(days=1)).isoformat())\n"
        "record('echo', {'columns': columns, 'limits': limits, 'threshold': threshold, 'since': since.isoformat()})\n")
    nb = nbformat.v4.new_notebook(cells=[params, body])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


@pytest.mark.slow
def test_typed_parameters_round_trip_through_papermill(tmp_path):
    import papermill as pm
    tpl = template(tmp_path / "t.ipynb")
    given = validate(schema(tpl), {"day": "2026-04-02", "since": "2026-04-02T07:45:00", "columns": ["x", "y"],
                                   "limits": {"psi": 0.3, "nested": {"k": [1, 2]}}, "threshold": 1})
    assert given["day"] == dt.date(2026, 4, 2) and given["threshold"] == 1.0
    injected = {k: (v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v) for k, v in given.items()}
    pm.execute_notebook(str(tpl), str(tmp_path / "out.ipynb"), parameters=injected, kernel_name="python3",
                        progress_bar=False, cwd=str(tmp_path))
    values = read_values(tmp_path / "out.ipynb")
    assert values["types"] == {"day": "date", "since": "datetime", "columns": "list", "limits": "dict", "threshold": "float"}
    assert values["day_plus_one"] == "2026-04-03"
    assert values["echo"] == {"columns": ["x", "y"], "limits": {"psi": 0.3, "nested": {"k": [1, 2]}}, "threshold": 1.0,
                              "since": "2026-04-02T07:45:00"}
