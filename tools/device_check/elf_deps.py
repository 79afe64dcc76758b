"""What a 64-bit little-endian ELF shared object needs at load time, read from its own
sections (no readelf or nm needed): the libraries it names (DT_NEEDED) and the symbols it
leaves undefined. A library that needs neither libpython nor any Py*/_Py* symbol loads
under any Python, or none (a Python extension module leaves its Py* symbols to the
interpreter that imports it, so the NEEDED list alone would not show the tie)."""
from __future__ import annotations

import struct
from pathlib import Path

SHT_SYMTAB, SHT_DYNSYM, SHT_DYNAMIC, DT_NEEDED = 2, 11, 6, 1


def _sections(data: bytes, path) -> list[tuple]:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    # (name, type, flags, addr, offset, size, link, info, align, entsize)
    return [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]


def _string(data: bytes, at: int) -> str:
    return data[at:data.index(b"\0", at)].decode("utf-8", "replace")


def needed_libraries(path) -> list[str]:
    data = Path(path).read_bytes()
    secs = _sections(data, path)
    out = []
    for s in secs:
        if s[1] != SHT_DYNAMIC:
            continue
        strtab = secs[s[6]][4]
        for i in range(s[5] // s[9]):
            tag, val = struct.unpack_from("<qQ", data, s[4] + i * s[9])
            if tag == 0:
                break
            if tag == DT_NEEDED:
                out.append(_string(data, strtab + val))
    return out


def _symbols(path, kind: int):
    """(name, section index, value) of every named symbol in the sections of type `kind`."""
    data = Path(path).read_bytes()
    secs = _sections(data, path)
    for s in secs:
        if s[1] != kind:
            continue
        strtab = secs[s[6]][4]
        for i in range(1, s[5] // s[9]):
            name, _info, _other, shndx, value, _size = struct.unpack_from("<IBBHQQ", data, s[4] + i * s[9])
            if name:
                yield _string(data, strtab + name), shndx, value


def undefined_symbols(path) -> list[str]:
    """The dynamic symbols the object expects another object to define."""
    return [name for name, shndx, _ in _symbols(path, SHT_DYNSYM) if shndx == 0]


def python_dependencies(path) -> list[str]:
    """What ties the object to a Python: libpython among its needs, Py*/_Py* symbols it leaves undefined."""
    return ([n for n in needed_libraries(path) if n.startswith("libpython")]
            + [s for s in undefined_symbols(path) if s.startswith(("Py", "_Py"))])


def symbol_offsets(path, wanted) -> dict:
    """{name: st_value} of the symbols of the full symbol table (local ones too, such as the
    host stubs of `static` kernels) for which wanted(name) is true. A symbol's address in a
    loaded copy is the load base plus this value (the base: any exported symbol's address
    minus its own value)."""
    return {name: value for name, shndx, value in _symbols(path, SHT_SYMTAB) if shndx and wanted(name)}
