"""What a results file records about the run: card, driver, versions, date, commit."""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import torch

def _cmd(args, cwd=None) -> str | None:
    try:
        out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _source_dir() -> Path | None:
    """The folder fusedrnn is imported from (a checkout when installed in editable mode)."""
    import importlib.util  # noqa: PLC0415
    spec = importlib.util.find_spec("fusedrnn")
    return Path(spec.origin).parent if spec and spec.origin else None


def git_info() -> dict:
    """The commit of the fusedrnn being measured and whether its tree differed from it
    (None outside a git checkout). FUSEDRNN_GIT_COMMIT overrides (the device machine gets
    a copy of the working tree without .git)."""
    where = _source_dir()
    commit = os.environ.get("FUSEDRNN_GIT_COMMIT") or (_cmd(["git", "rev-parse", "HEAD"], where) if where else None)
    status = _cmd(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"], where) \
        if where else None
    return {"commit": commit or "unknown",
            "dirty": None if status is None else bool(status),
            "commit_source": "FUSEDRNN_GIT_COMMIT" if os.environ.get("FUSEDRNN_GIT_COMMIT") else "git"}


def collect(device: torch.device, timer_description: str, argv=None) -> dict:
    now = _dt.datetime.now(_dt.timezone.utc)
    meta = {
        "date": now.isoformat(timespec="seconds"),
        "device_type": device.type,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "triton": _version("triton"),
        "numpy": _version("numpy"),
        "fusedrnn": _version("fusedrnn"),
        "timer": timer_description,
        "command": " ".join(["python -m benchmarks.run", *(sys.argv[1:] if argv is None else argv)]),
        **git_info(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        meta.update(card=props.name, sm_count=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}",
                    driver=_cmd(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]),
                    cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                    matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
        if meta["driver"]:
            meta["driver"] = meta["driver"].splitlines()[0]
    else:
        meta.update(card=f"CPU: {cpu_name()}", driver=None, cpu_threads=torch.get_num_threads())
    try:
        import fusedrnn  # noqa: PLC0415
        meta["backends"] = {k: {"ok": ok, "reason": why} for k, (ok, why) in fusedrnn.available_backends().items()}
    except Exception as e:  # noqa: BLE001
        meta["backends"] = {"error": str(e)}
    return meta


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def run_time(meta: dict) -> _dt.datetime:
    """The run's `date` as a datetime; ValueError unless it is an ISO 8601 date (and time). It
    names the results folder, so a path ("/x", "../..") must never get through."""
    date = meta.get("date")
    if not isinstance(date, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ][0-9:.+\-Z]*)?", date):
        raise ValueError(f"meta 'date' {date!r} is not an ISO date (YYYY-MM-DD[Thh:mm:ss...])")
    try:
        return _dt.datetime.fromisoformat(date)
    except ValueError:
        raise ValueError(f"meta 'date' {date!r} is not a valid ISO date") from None


def default_out_dir(meta: dict, root: Path | None = None) -> Path:
    """root/<date>-<card>/ (root: ./fusedrnn-bench in the working directory; CPU runs:
    <date>-cpu). A second run on the same card and day gets a time suffix rather than
    overwriting the first. ValueError if the meta's date or card could place it anywhere but
    directly under root."""
    root = root if root is not None else Path.cwd() / "fusedrnn-bench"
    when = run_time(meta)
    card = meta.get("card")
    if meta.get("device_type") == "cuda" and not isinstance(card, str):
        raise ValueError(f"meta 'card' {card!r} is not a card name")
    card = slug(card) if meta.get("device_type") == "cuda" else "cpu"  # slug: a-z, 0-9 and '-' only
    base = root / f"{when:%Y-%m-%d}-{card}"
    if (base / "results.json").exists():
        base = base.with_name(f"{base.name}-{when:%H%M%S}")
    if base.resolve().parent != root.resolve():
        raise ValueError(f"the results folder {base} would not lie directly under {root}")
    return base
