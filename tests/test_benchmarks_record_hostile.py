"""benchmarks.record on a hostile or malformed fetched folder: the date names the results
folder, so a path in it must never write outside benchmarks/results; every malformed part
ends in one line on stderr and exit code 3 (record_input.MALFORMED), with nothing written."""
import json

import pytest

from benchmarks import record, record_input
from support.bench_record import _fetched, _repo


def _edit(src, change):
    path = src / "results-bf16.json"
    data = json.loads(path.read_text())
    data = change(data) or data
    path.write_text(data if isinstance(data, str) else json.dumps(data))


def _set_meta(key, value):
    return lambda d: d["meta"].update({key: value})


def _drop_row_key(key):
    return lambda d: d["rows"][1].pop(key)


HOSTILE_DATES = {"absolute": "{outside}/owned", "parent": "../../owned", "parent after a date": "2031-05-06/../../owned",
                 "time part with a path": "2031-05-06T07:08:09/../../owned", "not a day": "2031-02-30"}

MALFORMED = {
    "no meta": lambda d: d.pop("meta"),
    "meta a list": lambda d: d.update(meta=[1]),
    "numeric date": _set_meta("date", 20310506),
    "card a number": _set_meta("card", 9000),
    "dtypes a string": _set_meta("dtypes", "bf16"),
    "rows a dict": lambda d: d.update(rows={"a": 1}),
    "rows missing": lambda d: d.pop("rows"),
    "row missing provider": _drop_row_key("provider"),
    "row missing median_ms": _drop_row_key("median_ms"),
    "row a number": lambda d: d["rows"].append(3),
    "median_ms text": lambda d: d["rows"][0].update(median_ms="fast"),
    "top-level list": lambda d: [d],
    "not JSON": lambda d: "{",
    "deeply nested": lambda d: "[" * 100_000 + "]" * 100_000,
}


def _refused(src, repo, capsys):
    readme = (repo / "README.md").read_text()
    assert record.main([str(src), "--repo", str(repo)]) == record_input.MALFORMED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be filed" in err, err
    assert not any((repo / "benchmarks" / "results").iterdir())  # nothing filed
    assert (repo / "README.md").read_text() == readme and not (repo / "fusedrnn").exists()
    return err


@pytest.mark.parametrize("kind", sorted(HOSTILE_DATES))
def test_a_date_that_is_a_path_writes_nothing_anywhere(tmp_path, capsys, kind):
    src, repo = _fetched(tmp_path), _repo(tmp_path)
    outside = tmp_path / "outside"
    date = HOSTILE_DATES[kind].format(outside=outside)
    _edit(src, _set_meta("date", date))
    err = _refused(src, repo, capsys)
    assert "date" in err and not outside.exists() and not (tmp_path / "owned").exists()
    assert not list(tmp_path.rglob("owned*")) and not list(tmp_path.rglob("results.md"))


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_a_malformed_results_file_is_one_line_and_exit_3(tmp_path, capsys, kind):
    src, repo = _fetched(tmp_path), _repo(tmp_path)
    _edit(src, MALFORMED[kind])
    _refused(src, repo, capsys)


def test_a_broken_junit_xml_is_one_line_and_exit_3(tmp_path, capsys):
    src, repo = _fetched(tmp_path), _repo(tmp_path)
    (src / "junit.xml").write_text("<testsuites><testsuite")
    assert "junit.xml is not readable JUnit XML" in _refused(src, repo, capsys)


def test_a_card_name_cannot_leave_the_results_folder(tmp_path, capsys):
    src, repo = _fetched(tmp_path), _repo(tmp_path)
    _edit(src, _set_meta("card", "../../../outside"))  # a card name is reduced to a-z, 0-9 and '-'
    assert record.main([str(src), "--repo", str(repo), "--no-readme", "--no-tuning"]) == 0
    assert [p.name for p in (repo / "benchmarks" / "results").iterdir()] == ["2031-05-06-outside"]
