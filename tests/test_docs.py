"""The repository's documentation stands alone: it cites no file outside the repository,
and every relative link in it points at a file that exists."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "examples" / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# files that live outside the repository (the project's planning notes, the machines' folders)
OUTSIDE = re.compile(r"DESIGN\.md|ANCHORS\.md|\.\./shared|/work/")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_doc_cites_nothing_outside_the_repository(doc):
    text = doc.read_text(encoding="utf-8")
    assert not OUTSIDE.findall(text), f"{doc.name} cites {sorted(set(OUTSIDE.findall(text)))}"
    for target in LINK.findall(text):
        if "://" in target or target.startswith("mailto:"):
            continue
        path = (doc.parent / target).resolve()
        assert path.is_relative_to(ROOT) and path.exists(), f"{doc.name}: broken link {target}"


def test_design_and_anchor_pages_exist_and_are_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for page in ("docs/design.md", "docs/anchors.md"):
        assert (ROOT / page).is_file() and f"]({page})" in readme, page
