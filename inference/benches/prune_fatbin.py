"""Keeps only one GPU architecture's machine code in a CUDA shared library, as `nvprune` does for
object files: `python prune_fatbin.py LIB.so OUT.so --arch 90`.

ONNX Runtime's CUDA provider (the PyPI wheel) carries SASS for sm_75, 80, 86, 89, 90a and 120a:
218 MB of its 284 MB, nearly incompressible. An H100 or H200 runs only the sm_90a images, and the
device tool carries 64 MiB per call, so the other architectures cost calls of a 15-minute lease.

The `.nv_fatbin` section holds one container per compilation unit (header: magic 0xBA55ED50,
version, header size, size of the entries that follow), each a run of entries (header: kind,
header size, payload size, ..., architecture). A container that has an entry for `--arch` keeps
only those entries, its size field shrinks to them, and the bytes it freed become zeros; every
container stays at its offset, since the registration records point at it. A container without
such an entry (nothing of it could run on that GPU anyway) is left as it is. The ELF is otherwise
unchanged. `cuobjdump --list-elf OUT.so` then lists only that architecture."""

from __future__ import annotations

import argparse
import struct
import sys

MAGIC = 0xBA55ED50


def section(data: bytes, wanted: str) -> tuple[int, int]:
    """(file offset, size) of an ELF64 little-endian section."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise SystemExit("not a 64-bit little-endian ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names = headers[shstrndx][4]
    for name, _type, _flags, _addr, offset, size in headers:
        end = data.index(b"\0", names + name)
        if data[names + name:end].decode() == wanted:
            return offset, size
    raise SystemExit(f"no {wanted} section")


def entries(buf: bytearray, start: int, end: int):
    """(offset, length, architecture) of each entry of the container whose entries span start..end."""
    pos = start
    while pos < end:
        _kind, _version, header, payload = struct.unpack_from("<HHIQ", buf, pos)
        arch = struct.unpack_from("<I", buf, pos + 28)[0]
        if header < 32 or pos + header + payload > end:
            raise SystemExit(f"malformed fatbin entry at {pos:#x}")
        yield pos, header + payload, arch
        pos += header + payload


def prune(buf: bytearray, arch: int) -> dict:
    offset, size = section(buf, ".nv_fatbin")
    stats = {"containers": 0, "pruned": 0, "kept_entries": 0, "dropped_entries": 0, "freed": 0}
    pos, end = offset, offset + size
    while pos + 16 <= end:
        magic, _version, header, fat = struct.unpack_from("<IHHQ", buf, pos)
        if magic != MAGIC:
            pos += 8  # containers are 8-byte aligned, zero padding between them
            continue
        start, stop = pos + header, pos + header + fat
        if stop > end:
            raise SystemExit(f"fatbin container at {pos:#x} runs past its section")
        stats["containers"] += 1
        found = list(entries(buf, start, stop))
        keep = [(o, n) for o, n, a in found if a == arch]
        if keep:
            kept = b"".join(bytes(buf[o:o + n]) for o, n in keep)
            buf[start:start + len(kept)] = kept
            buf[start + len(kept):stop] = bytes(stop - start - len(kept))
            struct.pack_into("<Q", buf, pos + 8, len(kept))
            stats["pruned"] += 1
            stats["kept_entries"] += len(keep)
            stats["dropped_entries"] += len(found) - len(keep)
            stats["freed"] += fat - len(kept)
        pos = stop
    return stats


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("lib")
    p.add_argument("out")
    p.add_argument("--arch", type=int, default=90, help="SM version to keep (90: H100, H200)")
    args = p.parse_args(argv)
    with open(args.lib, "rb") as f:
        buf = bytearray(f.read())
    stats = prune(buf, args.arch)
    with open(args.out, "wb") as f:
        f.write(buf)
    print(f"prune_fatbin: {stats['pruned']} of {stats['containers']} containers pruned to sm_{args.arch}: "
          f"{stats['kept_entries']} entries kept, {stats['dropped_entries']} dropped, "
          f"{stats['freed'] / 2**20:.1f} MiB zeroed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
