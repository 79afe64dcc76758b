"""What pytest's junit file (or, when there is none, its `-v` log) says: counts, and each
failing test as a node id with its kind (wrong / crash / hang) and first message line.

junit is written with `-o junit_family=xunit1`, whose <testcase> carries the test's file,
so a node id can be rebuilt exactly for the triage reruns."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

WRONG, CRASH, HANG, INTERRUPTED = "wrong", "crash", "hang", "interrupted"


@dataclass
class Failure:
    nodeid: str
    kind: str               # WRONG | CRASH | HANG | INTERRUPTED (still running when the stage was stopped)
    message: str            # first line


@dataclass
class Report:
    tests: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    interrupted: int = 0    # running when pytest was stopped (junit: a <testcase> with no name)
    failures: list[Failure] = field(default_factory=list)
    source: str = "junit"   # or "log" when rebuilt from the -v output

    def counts(self) -> str:
        text = f"{self.passed} passed, {self.failed} failed, {self.errors} errors, {self.skipped} skipped"
        return text + (f", {self.interrupted} interrupted" if self.interrupted else "")


def classify(message: str) -> str:
    """A failure's kind from its message: a timeout or a dead worker is a hang/crash, an
    assertion (or pytest.raises/fail) is a wrong result, any other exception a crash."""
    m = message.strip()
    low = m.lower()
    if "timeout" in low and ("pytest-timeout" in low or low.startswith("failed: timeout") or "+++ timeout" in low):
        return HANG
    if "worker" in low and "crashed" in low:
        return CRASH
    if m.startswith(("AssertionError", "assert ", "Failed:", "E   assert", "E   AssertionError")) or \
            re.match(r"^(E\s+)?(AssertionError|assert\b)", m):
        return WRONG
    return CRASH


def nodeid(case: ET.Element) -> str:
    name = case.get("name", "?")
    file = case.get("file")
    classname = case.get("classname", "")
    if not file:
        return f"{classname.replace('.', '/')}.py::{name}" if classname else name
    module = file[:-3].replace("/", ".") if file.endswith(".py") else file
    classes = classname[len(module) + 1:] if classname.startswith(module + ".") else ""
    return "::".join([file] + ([*classes.split(".")] if classes else []) + [name])


def _first_line(el: ET.Element) -> str:
    msg = (el.get("message") or "").strip() or (el.text or "").strip()
    return msg.splitlines()[0][:300] if msg else el.tag


def parse_junit(path: Path) -> Report:
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    rep = Report()
    for suite in suites:
        for case in suite.iter("testcase"):
            if case.get("name") is None:   # the test pytest was in when it got SIGINT
                rep.interrupted += 1
                continue
            rep.tests += 1
            bad = case.find("failure")
            err = case.find("error")
            if case.find("skipped") is not None and bad is None and err is None:
                rep.skipped += 1
            elif bad is not None:
                rep.failed += 1
                rep.failures.append(Failure(nodeid(case), classify(_kind_text(bad)), _first_line(bad)))
            elif err is not None:
                rep.errors += 1
                rep.failures.append(Failure(nodeid(case), classify(_kind_text(err)), _first_line(err)))
            else:
                rep.passed += 1
    return rep


def _kind_text(el: ET.Element) -> str:
    """The text the kind is read from: the message, or the traceback's last 'E' line."""
    msg = (el.get("message") or "").strip()
    if msg:
        return msg
    e_lines = [ln[1:].strip() for ln in (el.text or "").splitlines() if ln.startswith("E ")]
    return e_lines[0] if e_lines else (el.text or "")


# `-v` lines: "tests/x.py::test_a[p] PASSED [ 10%]" or, under xdist, "[gw0] [ 10%] PASSED tests/x.py::test_a[p]"
_V_PLAIN = re.compile(r"^(?P<id>\S+::\S+) (?P<st>PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")
_V_XDIST = re.compile(r"^\[gw\d+\] \[\s*\d+%\] (?P<st>PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS) (?P<id>\S+::\S+)")


_V_STARTED = re.compile(r"^(?P<id>\S+::\S+) $")


def unfinished(text: str) -> list[str]:
    """Tests a `-v` log shows as started (a bare "id " line) but never finished: those pytest
    was inside when it was stopped."""
    started, done = [], set()
    for line in text.splitlines():
        m = _V_STARTED.match(line)
        if m:
            started.append(m.group("id"))
            continue
        m = _V_PLAIN.match(line) or _V_XDIST.match(line)
        if m:
            done.add(m.group("id"))
    return [nid for nid in dict.fromkeys(started) if nid not in done]


def parse_verbose_log(text: str) -> Report:
    """Counts and failing ids from pytest -v output (when junit is missing: a hard kill)."""
    rep = Report(source="log")
    seen: dict[str, str] = {}
    for line in text.splitlines():
        m = _V_PLAIN.match(line) or _V_XDIST.match(line)
        if m:
            seen[m.group("id")] = m.group("st")
    for nid, st in seen.items():
        rep.tests += 1
        if st in ("PASSED", "XFAIL", "XPASS"):
            rep.passed += 1
        elif st == "SKIPPED":
            rep.skipped += 1
        else:
            rep.failed += st == "FAILED"
            rep.errors += st == "ERROR"
            rep.failures.append(Failure(nid, WRONG, f"{st} (from the -v log: pytest was killed before its "
                                                     "report, so the cause is not recorded)"))
    return rep


def write_from_report(rep: Report, path: Path, note: str) -> None:
    """A minimal junit file for a run that died before writing its own, so one always comes back."""
    suite = ET.Element("testsuite", name="pytest (rebuilt from the -v log)", tests=str(rep.tests),
                       failures=str(rep.failed), errors=str(rep.errors), skipped=str(rep.skipped))
    ET.SubElement(suite, "properties").append(ET.Element("property", name="note", value=note))
    bad = {f.nodeid: f for f in rep.failures}
    for nid in sorted(bad):
        file, _, name = nid.partition("::")
        case = ET.SubElement(suite, "testcase", file=file, name=name)
        ET.SubElement(case, "failure", message=bad[nid].message)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
