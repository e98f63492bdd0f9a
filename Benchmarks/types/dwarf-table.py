#!/usr/bin/env python3
"""Turns `readelf --debug-dump=info VMLINUX` (streamed on stdin) into the oracle table of type inference:
one line per data variable with a static address (DW_OP_addr), tab-separated:

    link_address  name  category  resolved_name  size

category: struct, union, enum, integer, pointer, array, float, other. resolved_name follows typedefs and
const/volatile: "struct task_struct", "unsigned int", "struct foo *" (pointers: one level of pointee),
"struct foo[4]" (arrays: element and count); an anonymous struct, union or enum is named by the typedef
that names it ("atomic_t"). Types are resolved within each compilation unit (readelf
prints section offsets, CU-relative references resolve inside the CU being read), so memory stays
bounded by one CU.

    readelf --debug-dump=info vmlinux | Benchmarks/types/dwarf-table.py | sort -u | xz -9 > table.xz
"""
import re
import sys

DIE = re.compile(r'^\s*<(\d+)><([0-9a-f]+)>: Abbrev Number: (\d+)(?: \((DW_TAG_\w+)\))?')
ATTR = re.compile(r'^\s*<[0-9a-f]+>\s+(DW_AT_\w+)\s*:\s?(.*)$')
REF = re.compile(r'<0x([0-9a-f]+)>')
ADDR = re.compile(r'DW_OP_addr: ([0-9a-f]+)\)?\s*$')

KEEP = {'DW_AT_name', 'DW_AT_type', 'DW_AT_location', 'DW_AT_specification', 'DW_AT_abstract_origin',
        'DW_AT_byte_size', 'DW_AT_encoding', 'DW_AT_upper_bound', 'DW_AT_count'}


def value_name(v):
    # "(indirect string, offset: 0x12): name" or "name"
    if v.startswith('(') and '): ' in v:
        return v.split('): ', 1)[1].strip()
    return v.strip()


def number(v):
    m = re.match(r'\s*(?:0x([0-9a-f]+)|(-?\d+))', v)
    if not m:
        return None
    return int(m.group(1), 16) if m.group(1) else int(m.group(2))


class CU:
    def __init__(self):
        self.dies = {}       # offset -> dict(tag, attrs, children)
        self.variables = []  # offsets of variables with an address

    def describe(self, off, depth=0):
        """(category, resolved name, size) of the type at off."""
        if depth > 32:
            return ('other', '?', 0)
        d = self.dies.get(off)
        if d is None:
            return ('other', '?', 0)
        tag, a = d['tag'], d['attrs']
        if tag in ('DW_TAG_typedef', 'DW_TAG_const_type', 'DW_TAG_volatile_type', 'DW_TAG_restrict_type',
                   'DW_TAG_atomic_type'):
            t = a.get('DW_AT_type')
            if t is None:
                return ('other', 'void', 0)
            r = self.describe(t, depth + 1)
            # An anonymous struct/union/enum is known by its typedef's name (atomic_t, spinlock_t's parts).
            if tag == 'DW_TAG_typedef' and r[1].endswith('(anon)') and a.get('DW_AT_name'):
                return (r[0], a['DW_AT_name'], r[2])
            return r
        size = a.get('DW_AT_byte_size') or 0
        name = a.get('DW_AT_name')
        if tag == 'DW_TAG_base_type':
            enc = a.get('DW_AT_encoding') or 0
            return ('float' if enc == 4 else 'integer', name or '?', size)
        if tag == 'DW_TAG_structure_type':
            return ('struct', 'struct ' + (name or '(anon)'), size)
        if tag == 'DW_TAG_union_type':
            return ('union', 'union ' + (name or '(anon)'), size)
        if tag == 'DW_TAG_enumeration_type':
            return ('enum', 'enum ' + (name or '(anon)'), size)
        if tag == 'DW_TAG_pointer_type':
            t = a.get('DW_AT_type')
            inner = 'void' if t is None else self.describe(t, depth + 1)[1]
            if inner.endswith('*') or inner == '?':
                inner = inner
            return ('pointer', inner + ' *', 8)
        if tag == 'DW_TAG_array_type':
            t = a.get('DW_AT_type')
            cat, inner, esize = self.describe(t, depth + 1) if t is not None else ('other', 'void', 0)
            count = 1
            dims = ''
            for c in d['children']:
                cd = self.dies.get(c)
                if cd is None or cd['tag'] != 'DW_TAG_subrange_type':
                    continue
                ca = cd['attrs']
                n = ca.get('DW_AT_count')
                if n is None and ca.get('DW_AT_upper_bound') is not None:
                    n = ca['DW_AT_upper_bound'] + 1
                n = n or 0
                count *= n
                dims += '[%d]' % n
            return ('array', inner + dims, esize * count)
        if tag == 'DW_TAG_subroutine_type':
            return ('other', 'function', 0)
        return ('other', tag, size)

    def emit(self, out):
        for off in self.variables:
            d = self.dies[off]
            a = d['attrs']
            name, t = a.get('DW_AT_name'), a.get('DW_AT_type')
            seen = 0
            spec = a.get('DW_AT_specification') or a.get('DW_AT_abstract_origin')
            while (name is None or t is None) and spec is not None and seen < 8:
                sd = self.dies.get(spec)
                if sd is None:
                    break
                name = name or sd['attrs'].get('DW_AT_name')
                t = t if t is not None else sd['attrs'].get('DW_AT_type')
                spec = sd['attrs'].get('DW_AT_specification') or sd['attrs'].get('DW_AT_abstract_origin')
                seen += 1
            if name is None or t is None:
                continue
            cat, resolved, size = self.describe(t)
            out.write('%x\t%s\t%s\t%s\t%d\n' % (a['address'], name, cat, resolved, size))


def main():
    out = sys.stdout
    cu = None
    stack = []  # (depth, offset)
    current = None
    for line in sys.stdin:
        m = DIE.match(line)
        if m:
            depth, off, abbrev, tag = int(m.group(1)), int(m.group(2), 16), int(m.group(3)), m.group(4)
            if depth == 0:
                if cu is not None:
                    cu.emit(out)
                cu = CU()
                stack = []
            if abbrev == 0 or cu is None:
                current = None
                continue
            while stack and stack[-1][0] >= depth:
                stack.pop()
            current = {'tag': tag, 'attrs': {}, 'children': []}
            cu.dies[off] = current
            if stack:
                parent = cu.dies.get(stack[-1][1])
                if parent is not None:
                    parent['children'].append(off)
            stack.append((depth, off))
            continue
        if current is None:
            continue
        m = ATTR.match(line)
        if not m or m.group(1) not in KEEP:
            continue
        key, v = m.group(1), m.group(2)
        if key == 'DW_AT_name':
            current['attrs'][key] = value_name(v)
        elif key in ('DW_AT_type', 'DW_AT_specification', 'DW_AT_abstract_origin'):
            r = REF.search(v)
            if r:
                current['attrs'][key] = int(r.group(1), 16)
        elif key == 'DW_AT_location':
            if current['tag'] == 'DW_TAG_variable':
                r = ADDR.search(v)
                if r and 'DW_OP_addr' in v and v.count('DW_OP') == 1:
                    current['attrs']['address'] = int(r.group(1), 16)
                    cu.variables.append(int(stack[-1][1]))
        else:
            n = number(v)
            if n is not None:
                current['attrs'][key] = n
    if cu is not None:
        cu.emit(out)


if __name__ == '__main__':
    main()
