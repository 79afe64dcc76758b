"""artifacts.tar.gz: every log and report under the work folder, within what the device
tool brings back (16 MiB a file): a log over PER_FILE is cut to its head and tail, and
the biggest members go first if the archive is still too large. Written beside the
final name and renamed, so a cut-off run never leaves half an archive."""
from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

PER_FILE = 3 * 2**20
ARCHIVE_LIMIT = 15 * 2**20
HEAD = 256 * 1024


def _clipped(path: Path) -> bytes:
    data = path.read_bytes()
    if len(data) <= PER_FILE:
        return data
    cut = len(data) - PER_FILE
    note = f"\n\n[... {cut} bytes cut by the device check (file of {len(data)} bytes) ...]\n\n".encode()
    return data[:HEAD] + note + data[-(PER_FILE - HEAD):]


def pack(work: Path, dest: Path) -> list[str]:
    """Archive `work` into `dest`; returns what was left out (if anything)."""
    files = sorted(p for p in work.rglob("*") if p.is_file() and not p.is_symlink())
    left_out: list[str] = []
    while True:
        part = dest.with_name(dest.name + ".part")
        with tarfile.open(part, "w:gz", compresslevel=6) as tar:
            for p in files:
                data = _clipped(p)
                info = tarfile.TarInfo(str(p.relative_to(work)))
                info.size, info.mtime, info.mode = len(data), int(p.stat().st_mtime), 0o644
                tar.addfile(info, io.BytesIO(data))
        if part.stat().st_size <= ARCHIVE_LIMIT or not files:
            os.replace(part, dest)
            return left_out
        biggest = max(files, key=lambda p: p.stat().st_size)
        files.remove(biggest)
        left_out.append(str(biggest.relative_to(work)))
