#!/usr/bin/env python3
"""Reads a struct as `kreach type` renders it in C (stdin) and prints, for its top-level members, "NAME
BYTE-OFFSET" from their /* OFFSET SIZE */ comments, then "size N": the end of the last member plus the
padding the rendering reports. Compared in the VM cases with bpftool's raw dump of the same BTF struct."""
import re
import sys

end = 0
for line in sys.stdin:
    m = re.match(r'^\t(?!\t)(.*?);\s*/\*\s*(\d+)(?::\s*\d+)?\s+(\d+)\s*\*/\s*$', line)
    if m:
        decl, off, size = m.group(1), int(m.group(2)), int(m.group(3))
        decl = re.sub(r':\d+$', '', decl)
        fp = re.search(r'\(\s*\*\s*([A-Za-z_]\w*)\s*\)', decl)
        words = re.findall(r'[A-Za-z_]\w*', re.sub(r'\[[^\]]*\]', '', decl))
        name = fp.group(1) if fp else (words[-1] if decl.strip() != '}' and words else '(anon)')
        print(name, off)
        end = max(end, off + size)
        continue
    p = re.match(r'^\s*/\* padding: (\d+) \*/\s*$', line)
    if p:
        end += int(p.group(1))
print("size", end)
