#!/usr/bin/python3
"""elf-kernel-map.py IN OUT: IN (an x86-64 ELF vmcore whose PT_LOADs carry physical addresses only, as qemu's
dump-guest-memory without paging and makedumpfile -E of it write them) copied to OUT with extra PT_LOADs mapping
the kernel image's virtual addresses (__START_KERNEL_map + physical - phys_base, VMCOREINFO's NUMBER(phys_base),
1 GiB: KERNEL_IMAGE_SIZE), as /proc/vmcore has them. drgn 0.0.22 needs them to read swapper_pg_dir; kreach and
crash don't. OUT = new ELF header and program headers, then IN's bytes whole (offsets shifted)."""
import re, shutil, struct, sys

START_KERNEL_MAP, IMAGE = 0xffffffff80000000, 1 << 30
src, dst = sys.argv[1:3]
with open(src, "rb") as f:
    head = f.read(64)
    assert head[:4] == b"\x7fELF" and head[4] == 2, "not an ELF64 file"
    phoff, = struct.unpack_from("<Q", head, 32)
    phentsize, phnum = struct.unpack_from("<HH", head, 54)
    f.seek(phoff)
    phdrs = [list(struct.unpack("<IIQQQQQQ", f.read(phentsize)[:56])) for _ in range(phnum)]
    note = next(p for p in phdrs if p[0] == 4)
    f.seek(note[2])
    m = re.search(rb"NUMBER\(phys_base\)=(-?\d+)", f.read(note[5]))
    assert m, "VMCOREINFO has no NUMBER(phys_base)"
    phys_base = int(m.group(1)) & (1 << 64) - 1
extra = []
for t, flags, off, vaddr, paddr, filesz, memsz, align in phdrs:
    lo, hi = max(paddr, phys_base), min(paddr + filesz, phys_base + IMAGE)
    if t == 1 and lo < hi:
        extra.append([1, 7, off + (lo - paddr), lo - phys_base + START_KERNEL_MAP, lo, hi - lo, hi - lo, 0])
assert extra, "no PT_LOAD holds the kernel image"
table = phdrs + extra
base = 64 + 56 * len(table)
base = (base + 4095) & ~4095
out_head = bytearray(head)
struct.pack_into("<Q", out_head, 32, 64)
struct.pack_into("<HH", out_head, 54, 56, len(table))
with open(dst, "wb") as o, open(src, "rb") as f:
    o.write(out_head)
    for p in table:
        p = list(p)
        p[2] += base
        o.write(struct.pack("<IIQQQQQQ", *p))
    o.write(b"\0" * (base - o.tell()))
    shutil.copyfileobj(f, o, 16 << 20)
print(f"{dst}: {len(extra)} PT_LOADs map the kernel image (phys_base {phys_base:#x})")
