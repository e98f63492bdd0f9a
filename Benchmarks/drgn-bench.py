#!/usr/bin/python3
"""drgn's side of kreach's comparisons (Benchmarks/vmcore-vs-drgn, Tests/vm/cases/bench-drgn.case), with
Debian's python3-drgn and the kernel's DWARF (linux-image-VERSION-dbg's vmlinux):

  drgn-bench.py release VMLINUX CORE           print init_uts_ns.name.release from a dump (timed whole, outside)
  drgn-bench.py tasks VMLINUX CORE RUNS        walk init_task.tasks reading each pid: count, entries/s median
  drgn-bench.py sb-inodes VMLINUX CORE FSTYPE RUNS  walk the s_inodes list of the first FSTYPE superblock on
                                               super_blocks (tracefs: ~10,000 inodes in the 6.1 guest), reading
                                               i_ino: count, entries/s median
  drgn-bench.py inodes VMLINUX DIR RUNS        live (/proc/kcore): walk the s_inodes list of the filesystem
                                               holding DIR (a tmpfs), reading i_ino and i_size: count, entries/s median
  drgn-bench.py pages VMLINUX FILE RUNS        live: xa_for_each over FILE's page cache (f_mapping->i_pages),
                                               reading each folio's index and mapping: count, entries/s median

Entries/s time the walk alone (the program and its debuginfo are loaded before); each is the median of RUNS.
"""
import os, statistics, sys, time
import drgn
from drgn.helpers.linux.list import list_for_each_entry


def program(vmlinux, core):
    prog = drgn.Program()
    if core:
        prog.set_core_dump(core)
    else:
        prog.set_kernel()
    prog.load_debug_info([vmlinux], default=False, main=False)
    return prog


def rate(walk, runs, cpu=None):
    """Entries per second of wall time, median of RUNS; with a list `cpu`, also appends entries per second
    of this process's CPU time (steadier on a busy host)."""
    rates, cpus, count = [], [], 0
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        count = walk()
        rates.append(count / (time.perf_counter() - t0))
        cpus.append(count / max(time.process_time() - c0, 1e-9))
    if cpu is not None:
        cpu.append(statistics.median(cpus))
    return count, statistics.median(rates)


def walk_list(name, type_name, head, member, fields, runs, cpu_line=True):
    """Walks list_for_each_entry(TYPE, HEAD, MEMBER) reading FIELDS of each entry, RUNS times; prints
    drgn_NAME (the count) and its entries/s medians (wall, and CPU with cpu_line)."""
    def walk():
        n = 0
        for entry in list_for_each_entry(type_name, head, member):
            for f in fields:
                getattr(entry, f).value_()
            n += 1
        return n
    cpu = []
    count, r = rate(walk, runs, cpu)
    print(f"drgn_{name} {count}")
    print(f"drgn_{name}_entries_per_second_median {r:.0f}")
    if cpu_line:
        print(f"drgn_{name}_entries_per_cpu_second_median {cpu[0]:.0f}")


def main():
    mode, vmlinux, target = sys.argv[1:4]
    runs = int(sys.argv[-1]) if len(sys.argv) > 4 and sys.argv[-1].isdigit() else 5
    if mode == "release":
        prog = program(vmlinux, target)
        print(prog["init_uts_ns"].name.release.string_().decode())
    elif mode == "tasks":
        prog = program(vmlinux, target)
        walk_list("tasks", "struct task_struct", prog["init_task"].tasks.address_of_(), "tasks", ["pid"], runs)
    elif mode == "sb-inodes":
        fstype = sys.argv[4].encode()
        prog = program(vmlinux, target)
        sb = next(s for s in list_for_each_entry("struct super_block", prog["super_blocks"].address_of_(), "s_list")
                  if s.s_type.name.string_() == fstype)
        walk_list("sb_inodes", "struct inode", sb.s_inodes.address_of_(), "i_sb_list", ["i_ino"], runs)
    elif mode == "inodes":
        from drgn.helpers.linux.fs import fget
        from drgn.helpers.linux.pid import find_task
        prog = program(vmlinux, None)
        fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
        sb = fget(find_task(prog, os.getpid()), fd).f_inode.i_sb
        walk_list("inodes", "struct inode", sb.s_inodes.address_of_(), "i_sb_list", ["i_ino", "i_size"], runs, cpu_line=False)
    elif mode == "pages":
        from drgn.helpers.linux.fs import fget
        from drgn.helpers.linux.pid import find_task
        from drgn.helpers.linux.xarray import xa_for_each
        prog = program(vmlinux, None)
        fd = os.open(target, os.O_RDONLY)
        mapping = fget(find_task(prog, os.getpid()), fd).f_mapping
        folio = "struct folio *" if prog.type("struct folio").has_member("index") else "struct page *"

        def walk():
            n = 0
            for _, entry in xa_for_each(mapping.i_pages.address_of_()):
                page = drgn.cast(folio, entry)
                page.index.value_()
                page.mapping.value_()
                n += 1
            return n
        count, r = rate(walk, runs)
        print(f"drgn_pages {count}")
        print(f"drgn_pages_entries_per_second_median {r:.0f}")
    else:
        sys.exit(f"drgn-bench.py: unknown mode {mode}")


main()
