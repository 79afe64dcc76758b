"""The layout the docs describe: the kernel backends side by side (neither imports the other), and
docs/design.md naming only files that exist."""
import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
BACKENDS = {"fusedrnn.ops.cuda": ROOT / "fusedrnn/ops/cuda.py", "fusedrnn.ops.triton": ROOT / "fusedrnn/ops/triton"}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: pathlib.Path) -> set:
    """The absolute names a module imports (`from . import x` gives package.x)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            mod = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def _files(path: pathlib.Path):
    return sorted(path.glob("*.py")) if path.is_dir() else [path]


def test_imports_are_resolved():
    got = imports(ROOT / "fusedrnn/ops/triton/step_launch.py")
    assert {"fusedrnn.ops.step_args.check", "fusedrnn.ops.common", "fusedrnn.ops.triton.config"} <= got


def test_neither_kernel_backend_imports_the_other():
    for name, path in BACKENDS.items():
        others = [other for other in BACKENDS if other != name]
        for f in _files(path):
            bad = [m for m in imports(f) for other in others if m == other or m.startswith(other + ".")]
            assert not bad, f"{f.relative_to(ROOT)} imports {bad}: the backends share code through fusedrnn/ops"


#: a repository path: it starts at a top-level folder (a template such as `<card>.json` is skipped)
_PATH = re.compile(r"(?<![\w/.-])((?:fusedrnn|csrc|tests|tools|benchmarks|docs|examples|scripts)/[\w./*<>-]*)")
#: a markdown link to a file, relative to the document
_LINK = re.compile(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)")


def named_paths(text: str) -> set:
    return {m.rstrip(".") for m in _PATH.findall(text) if "<" not in m}


def test_design_doc_names_only_files_that_exist():
    doc = ROOT / "docs/design.md"
    text = doc.read_text()
    paths = named_paths(text)
    assert {"fusedrnn/ops/library.py", "fusedrnn/cell_table.py"} <= paths  # the pattern finds what the doc names
    missing = sorted(p for p in paths if not any(ROOT.glob(p)))
    assert not missing, f"docs/design.md names paths that do not exist: {missing}"
    links = _LINK.findall(text)
    assert "anchors.md" in links
    broken = sorted(link for link in links if not (doc.parent / link).exists())
    assert not broken, f"docs/design.md links to files that do not exist: {broken}"
