"""Resident memory, as the memory and leak tests measure it."""
import ctypes
import gc
import os

PAGE = os.sysconf("SC_PAGE_SIZE")

try:
    _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc: RSS then only over-reports, which cannot hide a leak
    _malloc_trim = None


def rss() -> int:
    """Resident memory after handing freed heap back to the OS, so that memory freed by
    earlier tests cannot absorb (and hide) what this loop keeps."""
    gc.collect()
    if _malloc_trim is not None:
        _malloc_trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE
