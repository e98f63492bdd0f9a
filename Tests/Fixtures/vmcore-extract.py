#!/usr/bin/env python3
"""Cuts a small fixture out of a real qemu dump (kdump-compressed, seekable: makedumpfile -R of qemu's
dump-guest-memory -z): only the pages that reading a few kernel addresses touches — every page-table page
of the walk from VMCOREINFO's init_top_pgt, and the data pages — as the dumper's filtering would leave them.
Writes DIR/vmcore.kdump (kdump-compressed, zlib pages, seekable), DIR/vmcore.flat (the same, flattened as
qemu writes it) and DIR/vmcore.elf (one PT_LOAD per kept run, physical addresses, VirtAddr 0, as qemu writes
it), with the original VMCOREINFO note. One page after the first address is kept in the RAM bitmap but not
dumped (excluded, as makedumpfile -d leaves a filtered page); in the ELF it is a PT_LOAD with MemSiz beyond
FileSiz.

  vmcore-extract.py [--pages-from OTHER.kdump] SEEKABLE.kdump OUTDIR ADDRESS[:LENGTH]...

--pages-from: the kdump file's pages are OTHER's own page data and flags, byte for byte (OTHER: makedumpfile's
seekable output from an ELF dump of the same memory, e.g. -l for lzo pages): the pages are found by walking
SEEKABLE (zlib, decoded here), and written as the other dumper compressed them.
"""
import struct, sys, zlib, os

args = sys.argv[1:]
other = None
if args[0] == "--pages-from":
    other, args = args[1], args[2:]
src, outdir, specs = args[0], args[1], args[2:]
f = open(src, "rb")
def rd(off, n):
    f.seek(off); b = f.read(n); assert len(b) == n, "truncated"; return b

h = rd(0, 464)
assert h[:8] == b"KDUMP   "
version, = struct.unpack_from("<i", h, 8)
block, subblocks, bitmap_blocks, max_mapnr32 = struct.unpack_from("<iiII", h, 428)
sub = rd(block, 104)
phys_base, = struct.unpack_from("<Q", sub, 0)
off_info, size_info = struct.unpack_from("<QQ", sub, 32)
max_mapnr, = struct.unpack_from("<Q", sub, 96)
info = rd(off_info, size_info)
half = bitmap_blocks * block // 2
bm_off = (1 + subblocks) * block
bitmap2 = rd(bm_off + half, (max_mapnr + 7) // 8)
desc_off = (1 + subblocks + bitmap_blocks) * block
prefix = [0]
for i in range(0, len(bitmap2)):
    prefix.append(prefix[-1] + bin(bitmap2[i]).count("1"))
def dumped(pfn): return bitmap2[pfn // 8] >> (pfn % 8) & 1
def page(pfn):
    assert dumped(pfn), f"pfn {pfn:#x} not in the source dump"
    idx = prefix[pfn // 8] + bin(bitmap2[pfn // 8] & ((1 << (pfn % 8)) - 1)).count("1")
    off, size, flags, _ = struct.unpack("<QIIQ", rd(desc_off + 24 * idx, 24))
    data = rd(off, size)
    return zlib.decompress(data) if flags & 1 else data

kv = dict(l.split("=", 1) for l in info.decode().splitlines() if "=" in l)
root = int(kv["SYMBOL(init_top_pgt)"], 16) - 0xffffffff80000000 + int(kv["NUMBER(phys_base)"])
levels = 5 if kv.get("NUMBER(pgtable_l5_enabled)") == "1" else 4
keep = set()
def walk(va):
    table = root & 0x000ffffffffff000
    for level in reversed(range(levels)):
        shift = 12 + 9 * level
        keep.add(table >> 12)
        e, = struct.unpack_from("<Q", page(table >> 12), ((va >> shift) & 0x1ff) * 8)
        assert e & 1, f"{va:#x} not mapped"
        if level == 0 or (level <= 2 and e & 0x80):
            mask = (1 << shift) - 1
            return (e & 0x000ffffffffff000 & ~mask) | (va & mask)
        table = e & 0x000ffffffffff000

first = None
for spec in specs:
    a, _, n = spec.partition(":")
    a, n = int(a, 16), int(n or "1")
    for va in range(a & ~0xfff, a + n, 0x1000):
        p = walk(va)
        keep.add(p >> 12)
        if first is None: first = p >> 12
        print(f"{va:#x} -> {p:#x}")
excluded = first + 2
assert excluded not in keep
pfns = sorted(keep)

os.makedirs(outdir, exist_ok=True)
# kdump-compressed: same header fields, our bitmaps and pages.
nbytes = (max_mapnr + 7) // 8
bitmap_blocks_new = 2 * ((nbytes + block - 1) // block)
b1 = bytearray(bitmap_blocks_new * block // 2); b2 = bytearray(len(b1))
for p in pfns + [excluded]: b1[p // 8] |= 1 << (p % 8)
for p in pfns: b2[p // 8] |= 1 << (p % 8)
hdr = bytearray(h) + bytes(block - len(h))
struct.pack_into("<I", hdr, 436, bitmap_blocks_new)
info_at = block + 4096  # the sub-header block holds VMCOREINFO after the sub-header (one block each)
subblocks_new = 1 + (len(info) + block - 1) // block + 1
struct.pack_into("<i", hdr, 432, subblocks_new)
subh = bytearray(sub) + bytes(subblocks_new * block - len(sub))
struct.pack_into("<QQ", subh, 32, block * 2, len(info))
struct.pack_into("<QQ", subh, 48, 0, 0)  # no other notes
subh[block:block + len(info)] = info
descs_at = (1 + subblocks_new + bitmap_blocks_new) * block
data_at = descs_at + 24 * len(pfns)
def raw_pages(path):
    """pfn → (data, flags) of every dumped page of a seekable kdump file, as its dumper wrote them."""
    g = open(path, "rb"); oh = g.read(464)
    ob, osub, obm = struct.unpack_from("<iiI", oh, 428)
    ohalf = obm * ob // 2
    g.seek((1 + osub) * ob + ohalf); odumped = g.read(ohalf)
    odesc = (1 + osub + obm) * ob
    index = 0; out = {}
    want = set(pfns)
    for byte_index, byte in enumerate(odumped):
        for bit in range(8):
            if byte >> bit & 1:
                pfn = byte_index * 8 + bit
                if pfn in want:
                    g.seek(odesc + 24 * index); off, size, flags, _ = struct.unpack("<QIIQ", g.read(24))
                    g.seek(off); out[pfn] = (g.read(size), flags)
                index += 1
    return out
verbatim = raw_pages(other) if other else None
descs = bytearray(); data = bytearray()
for p in pfns:
    if verbatim is not None:
        assert p in verbatim, f"pfn {p:#x} is not in {other}"
        c, flags = verbatim[p]
        descs += struct.pack("<QIIQ", data_at + len(data), len(c), flags, 0); data += c
        continue
    c = zlib.compress(page(p))
    if len(c) < block: descs += struct.pack("<QIIQ", data_at + len(data), len(c), 1, 0); data += c
    else: descs += struct.pack("<QIIQ", data_at + len(data), block, 0, 0); data += page(p)
seekable = bytes(hdr) + bytes(subh) + bytes(b1) + bytes(b2) + bytes(descs) + bytes(data)
open(os.path.join(outdir, "vmcore.kdump"), "wb").write(seekable)
# Flattened: makedumpfile's 4096-byte header, then (offset, size) big-endian records, then the end marker.
flat = bytearray(b"makedumpfile".ljust(16, b"\0") + struct.pack(">qq", 1, 1)); flat += bytes(4096 - len(flat))
chunk = 16384
for o in range(0, len(seekable), chunk):
    piece = seekable[o:o + chunk]
    flat += struct.pack(">qq", o, len(piece)) + piece
flat += struct.pack(">qq", -1, -1)
open(os.path.join(outdir, "vmcore.flat"), "wb").write(flat)
# ELF core: PT_NOTE with VMCOREINFO, one PT_LOAD per run of consecutive kept pages, and the excluded page.
runs = []
for p in pfns:
    if runs and runs[-1][0] + runs[-1][1] == p: runs[-1][1] += 1
    else: runs.append([p, 1])
name = b"VMCOREINFO\0"
note = struct.pack("<III", len(name), len(info), 0) + name.ljust((len(name) + 3) // 4 * 4, b"\0") + info.ljust((len(info) + 3) // 4 * 4, b"\0")
phnum = 1 + len(runs) + 1
off = 64 + 56 * phnum
ph = struct.pack("<IIQQQQQQ", 4, 0, off, 0, 0, len(note), len(note), 0)
body = bytearray(note)
for start, count in runs:
    ph += struct.pack("<IIQQQQQQ", 1, 0, off + len(body), 0, start * 4096, count * 4096, count * 4096, 0)
    for p in range(start, start + count): body += page(p)
ph += struct.pack("<IIQQQQQQ", 1, 0, off + len(body), 0, excluded * 4096, 0, 4096, 0)
eh = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
open(os.path.join(outdir, "vmcore.elf"), "wb").write(eh + ph + body)
print(f"kept {len(pfns)} pages; excluded pfn {excluded:#x}; root {root:#x}, {levels}-level")
