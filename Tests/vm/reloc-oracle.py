#!/usr/bin/python3
"""Functions of a .ko whose code references a data object, from `objdump -dr` and `readelf -s`.

The independent oracle for `kreach where MODULE:GLOBAL`: a PC-relative relocation's target is computed
from the instruction's real end (address + byte count in objdump's listing), not assumed.

With --address-taken, prints instead the uses that may take the object's address (what `where`'s pointer
hint rests on), one per line: `stored SECTION` (a relocation in a data section: a static initializer, the
__param table), `taken FUNCTION` (in code: an instruction objdump names lea, an absolute relocation (an
immediate or absolute operand), a GOT load). Nothing when every use is a RIP-relative load or store.

With --sites, prints every referencing site instead, `FUNCTION+0xOFFSET` (the relocated field's offset from the
function's start, as `kreach where --sites` lists them), sorted.

`reloc-oracle.py --seq-operations KO FUNCTION` prints the objects of KO that are a struct seq_operations (four
pointers: start, stop, next, show; 32 bytes on x86-64) whose .show (offset 24) readelf's relocations fill with
FUNCTION."""
import re, subprocess, sys, tempfile

if sys.argv[1] == "--seq-operations":
    ko, function = sys.argv[2], sys.argv[3]
    syms = subprocess.run(["readelf", "-sW", ko], capture_output=True, text=True, check=True).stdout.splitlines()
    secs = subprocess.run(["readelf", "-SW", ko], capture_output=True, text=True, check=True).stdout.splitlines()
    names = {int(m.group(1)): m.group(2) for m in (re.match(r"\s*\[\s*(\d+)\]\s+(\S+)", l) for l in secs) if m}
    fn = next((names[int(f[6])], int(f[1], 16)) for f in (l.split() for l in syms) if len(f) >= 8 and f[7] == function and f[3] == "FUNC")
    objects = {(names[int(f[6])], int(f[1], 16)): f[7] for f in (l.split() for l in syms)
               if len(f) >= 8 and f[3] == "OBJECT" and f[2] == "32" and f[6].isdigit()}
    section = None
    for line in subprocess.run(["readelf", "-rW", ko], capture_output=True, text=True, check=True).stdout.splitlines():
        m = re.match(r"^Relocation section '\.rela(\S+)'", line)
        if m:
            section = m.group(1)
            continue
        f = line.split()
        if section is None or len(f) < 5 or f[2] != "R_X86_64_64":
            continue
        target = " ".join(f[4:])
        if target in (function + " + 0", "%s + %x" % (fn[0], fn[1])) and (section, int(f[0], 16) - 24) in objects:
            print(objects[(section, int(f[0], 16) - 24)])
    sys.exit(0)
args = [a for a in sys.argv[1:] if a not in ("--address-taken", "--sites")]
address_taken = "--address-taken" in sys.argv[1:]
sites_mode = "--sites" in sys.argv[1:]
ko, name = args[0], args[1]
nth = int(args[2]) if len(args) > 2 else None  # the Nth object of that name, in symbol-table order
# Compressed modules (.ko.xz, .ko.zst: Debian from 6.12) are read through their decompressor.
for suffix, tool in ((".xz", "xz"), (".zst", "zstd")):
    if ko.endswith(suffix):
        plain = tempfile.NamedTemporaryFile(suffix=".ko")
        subprocess.run([tool, "-dc", ko], stdout=plain, check=True)
        plain.flush()
        ko = plain.name
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
fn, fn_start, last_addr, last_len, found, mnemonic, uses, sites = None, 0, 0, 0, set(), "", set(), set()
PC_RELATIVE = ("R_X86_64_PC32", "R_X86_64_PLT32", "R_X86_64_GOTPCREL", "R_X86_64_REX_GOTPCRELX", "R_X86_64_GOTPCRELX")
for line in dump.splitlines():
    m = re.match(r"^([0-9a-f]+) <(.+)>:$", line)
    if m:
        fn_start, fn = int(m.group(1), 16), m.group(2)
        continue
    m = re.match(r"^\s+([0-9a-f]+):\t((?:[0-9a-f]{2} )+)\s*(\S*)", line)
    if m:
        last_addr, last_len = int(m.group(1), 16), len(m.group(2).split())
        if m.group(3):  # a continuation line of a long instruction has bytes only
            mnemonic = m.group(3)
        continue
    m = re.match(r"^\s+([0-9a-f]+): (R_X86_64_\w+)\s+(\S+?)(?:([+-])0x([0-9a-f]+))?$", line)
    if not m or fn is None:
        continue
    off, kind, sym = int(m.group(1), 16), m.group(2), m.group(3)
    addend = int(m.group(5), 16) * (-1 if m.group(4) == "-" else 1) if m.group(5) else 0
    hit = sym == name
    if not hit and sym == sec_name:
        t = addend
        if kind in PC_RELATIVE:
            t = addend + (last_addr + last_len - off)  # S + A - P, with P the field and the instruction's real end
        hit = value <= t < value + max(size, 1)
    if hit:
        found.add(fn)
        sites.add((fn, off - fn_start))
        if mnemonic.startswith("lea") or "GOTPC" in kind or kind not in PC_RELATIVE:
            uses.add("taken " + fn)
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
if sites_mode:
    for f, o in sorted({(real(f), o) for f, o in sites}):
        print("%s+0x%x" % (f, o))
    sys.exit(0)
if address_taken:
    # Data sections (every relocation section but code's and debug info's): the address stored at build time.
    rel = subprocess.run(["readelf", "-rW", ko], capture_output=True, text=True, check=True).stdout
    section = None
    for line in rel.splitlines():
        m = re.match(r"^Relocation section '\.rela(\S+)'", line)
        if m:
            section = m.group(1)
            continue
        f = line.split()
        if section is None or section.startswith((".text", ".init.text", ".exit.text", ".debug")) or len(f) < 5:
            continue
        m = re.match(r"^(\S+?)\s*([+-])\s*([0-9a-f]+)$", " ".join(f[4:]))
        if not m:
            continue
        sym, addend = m.group(1), int(m.group(3), 16) * (-1 if m.group(2) == "-" else 1)
        if sym == name or (sym == sec_name and value <= addend < value + max(size, 1)):
            uses.add("stored " + section)
    for u in sorted({u.split()[0] + " " + real(u.split()[1]) if u.startswith("taken") else u for u in uses}):
        print(u)
    sys.exit(0)
for f in sorted({real(f) for f in found}):
    print(f)
