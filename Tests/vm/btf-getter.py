#!/usr/bin/python3
"""Prints "getter" or "-" for FUNCTION of MODULE from bpftool's raw dump of the module's split BTF (and
vmlinux's): a getter has a BTF prototype with a scalar return (int, enum) and no pointer parameter, looking
through typedefs and qualifiers. The independent oracle for the getter marking of `kreach where`.
    btf-getter.py MODULE FUNCTION"""
import re, subprocess, sys

module, function = sys.argv[1], sys.argv[2]
types = {}  # id -> (kind, name, attributes, member lines)
def load(args):
    out = subprocess.run(["bpftool"] + args, capture_output=True, text=True, check=True).stdout
    last = None
    for line in out.splitlines():
        m = re.match(r"^\[(\d+)\] (\S+) '([^']*)'(.*)$", line)
        if m:
            last = int(m.group(1))
            types[last] = (m.group(2), m.group(3), dict(re.findall(r"(\w+)=(\S+)", m.group(4))), [])
        elif last is not None and line.startswith("\t"):
            types[last][3].append(dict(re.findall(r"(\w+)=(\S+)", line)))
load(["btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "raw"])
load(["-B", "/sys/kernel/btf/vmlinux", "btf", "dump", "file", "/sys/kernel/btf/" + module, "format", "raw"])

def resolve(i):
    for _ in range(64):
        kind, _, attrs, _ = types[i]
        if kind not in ("TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"):
            return kind
        i = int(attrs["type_id"])
    return "?"

funcs = [i for i, t in types.items() if t[0] == "FUNC" and t[1] == function]
if not funcs:
    print("-")
    sys.exit(0)
proto = types[int(types[funcs[-1]][2]["type_id"])]
ret = int(proto[2]["ret_type_id"])
scalar = ret != 0 and resolve(ret) in ("INT", "ENUM", "ENUM64")
pointers = any(int(p["type_id"]) != 0 and resolve(int(p["type_id"])) == "PTR" for p in proto[3])
print("getter" if scalar and not pointers else "-")
