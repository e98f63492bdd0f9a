#!/usr/bin/python3
"""Functions of a .ko whose code references a data object, from `objdump -dr` and `readelf -s`.

The independent oracle for `kreach where MODULE:GLOBAL`: a PC-relative relocation's target is computed
from the instruction's real end (address + byte count in objdump's listing), not assumed."""
import re, subprocess, sys

ko, name = sys.argv[1], sys.argv[2]
nth = int(sys.argv[3]) if len(sys.argv) > 3 else None  # the Nth object of that name, in symbol-table order
syms = subprocess.run(["readelf", "-sW", ko], capture_output=True, text=True, check=True).stdout
secs = subprocess.run(["readelf", "-SW", ko], capture_output=True, text=True, check=True).stdout
target, seen = None, 0
for line in syms.splitlines():
    f = line.split()
    if len(f) >= 8 and f[7] == name and f[3] == "OBJECT":
        seen += 1
        if nth is None or seen == nth:
            target = (int(f[6]), int(f[1], 16), int(f[2]))  # section index, value, size
section_names = {}
for line in secs.splitlines():
    m = re.match(r"\s*\[\s*(\d+)\]\s+(\S+)", line)
    if m:
        section_names[m.group(2)] = int(m.group(1))
idx, value, size = target
sec_name = next(n for n, i in section_names.items() if i == idx)
dump = subprocess.run(["objdump", "-dr", ko], capture_output=True, text=True, check=True).stdout
fn, last_addr, last_len, found = None, 0, 0, set()
for line in dump.splitlines():
    m = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
    if m:
        fn = m.group(1)
        continue
    m = re.match(r"^\s+([0-9a-f]+):\t((?:[0-9a-f]{2} )+)", line)
    if m:
        last_addr, last_len = int(m.group(1), 16), len(m.group(2).split())
        continue
    m = re.match(r"^\s+([0-9a-f]+): (R_X86_64_\w+)\s+(\S+?)(?:([+-])0x([0-9a-f]+))?$", line)
    if not m or fn is None:
        continue
    off, kind, sym = int(m.group(1), 16), m.group(2), m.group(3)
    addend = int(m.group(5), 16) * (-1 if m.group(4) == "-" else 1) if m.group(5) else 0
    if sym == name:
        found.add(fn)
    elif sym == sec_name:
        t = addend
        if kind in ("R_X86_64_PC32", "R_X86_64_PLT32", "R_X86_64_GOTPCREL", "R_X86_64_REX_GOTPCRELX", "R_X86_64_GOTPCRELX"):
            t = addend + (last_addr + last_len - off)  # S + A - P, with P the field and the instruction's real end
        if value <= t < value + max(size, 1):
            found.add(fn)
# module_init()/module_exit() make init_module/cleanup_module aliases of the real functions: name those.
funcs = {}
for line in syms.splitlines():
    f = line.split()
    if len(f) >= 8 and f[3] == "FUNC":
        funcs.setdefault((f[6], f[1]), []).append(f[7])
def real(name):
    for names in funcs.values():
        if name in names:
            others = [n for n in names if n not in ("init_module", "cleanup_module")]
            return others[0] if others else name
    return name
for f in sorted({real(f) for f in found}):
    print(f)
