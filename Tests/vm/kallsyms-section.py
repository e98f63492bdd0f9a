#!/usr/bin/python3
"""Prints "NAME SECTION" for vmlinux symbols, the section being the one whose bounds in /proc/kallsyms
(_stext/_etext, _sinittext/_einittext: text; _sdata/_edata: data; __start_rodata/__end_rodata: rodata;
__bss_start/__bss_stop: bss) hold the symbol's address: the kernel's own layout, not kallsyms' letter.
    kallsyms-section.py NAME..."""
import sys

first = {}
with open("/proc/kallsyms") as f:
    for line in f:
        parts = line.split()
        if len(parts) == 3:  # vmlinux lines have no [module]
            first.setdefault(parts[2], int(parts[0], 16))
bounds = [("text", "_stext", "_etext"), ("text", "_sinittext", "_einittext"), ("data", "_sdata", "_edata"),
          ("rodata", "__start_rodata", "__end_rodata"), ("bss", "__bss_start", "__bss_stop")]
for name in sys.argv[1:]:
    a = first.get(name)
    found = [s for s, lo, hi in bounds if a is not None and lo in first and hi in first and first[lo] <= a < first[hi]]
    print(name, found[0] if found else "none")
