import Foundation
import Glibc
import XCTest
import Memory
@testable import KernelObject
import KernelSource
import KreachSupport
import KreachTestSupport

/// The indexed walkers (Walkers/XArray.swift, MapleTree.swift, CPUMask.swift) and container_of on the live
/// kernel, from heads reached through `current`, against the kernel's own views: mincore, /proc, maps, status.
final class IndexedWalkerTests: XCTestCase {
    func number(_ ev: Evaluator, _ fmt: ObjectFormatter, _ field: String, of entry: Object) throws -> UInt64 {
        let text = try fmt.compact(try ev.evaluate(field: field, of: entry))
        guard let v = UInt64(text) else { throw FixtureError("\(field) is \(text), not a number") }
        return v
    }

    func hasMember(_ ev: Evaluator, _ structure: String, _ member: String) throws -> Bool {
        let btf = ev.types.vmlinux
        guard let id = btf.lookup(structure).first(where: { (try? btf.kind(of: $0)) == .structure }) else { return false }
        return try CType.btf(btf, id).member(member) != nil
    }

    /// A file on a fresh tmpfs (huge=never: one page per folio), open read-write, for `body`; unmounted after.
    func withTmpfsFile(_ body: (Int32) throws -> Void) throws {
        let dir = NSTemporaryDirectory() + "kreach-xa-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        guard mkdir(dir, 0o700) == 0 else { throw FixtureError("mkdir \(dir): errno \(errno)") }
        defer { rmdir(dir) }
        guard mount("none", dir, "tmpfs", 0, "mode=0700,huge=never") == 0 else { throw XCTSkip(Host.skipReason("cannot mount a tmpfs (errno \(errno))")) }
        defer { umount2(dir, Int32(MNT_DETACH)) }
        let fd = open("\(dir)/f", O_CREAT | O_RDWR | O_EXCL, 0o600)
        guard fd >= 0 else { throw FixtureError("create: errno \(errno)") }
        defer { close(fd) }
        try body(fd)
    }

    /// Page indices of a sparse file: one page per level of a 64-slot xarray (index 70000 needs three).
    static let pages: [UInt64] = [0, 3, 7, 100, 1000, 70000]

    /// A tmpfs file (huge=never: one page per folio) written at `pages` only: its page cache (`i_pages`, an
    /// xarray) holds exactly those indices, which mincore on a mapping of the file reports resident. Each
    /// entry's folio (or page, before folios) has that index; `void *` entries give the same indices; --max cuts.
    func testPageCacheXArrayOfASparseTmpfsFileMatchesMincore() throws {
        let (ev, fmt) = try liveEvaluator()
        try withTmpfsFile { fd in
            let page = UInt64(sysconf(Int32(_SC_PAGESIZE)))
            for p in Self.pages { XCTAssertEqual(pwrite(fd, "x", 1, off_t(p * page)), 1) }

            // The kernel's view: which pages of the file are in the page cache.
            let count = Int((Self.pages.last ?? 0) + 1)
            guard let map = mmap(nil, count * Int(page), PROT_READ, MAP_SHARED, fd, 0), map != MAP_FAILED else { throw FixtureError("mmap: errno \(errno)") }
            defer { munmap(map, count * Int(page)) }
            var vector = [UInt8](repeating: 0, count: count)
            XCTAssertEqual(mincore(map, count * Int(page), &vector), 0)
            let resident = vector.indices.filter { vector[$0] & 1 != 0 }.map { UInt64($0) }
            XCTAssertEqual(resident, Self.pages, "mincore: the written pages only")

            let xa = "&current->files->fdt->fd[\(fd)]->f_mapping->i_pages"
            let folio = try hasMember(ev, "folio", "index") ? "struct folio" : "struct page"
            let walked = try walkEntries(ev, "xa_for_each(\(folio), \(xa))")
            XCTAssertEqual(walked.map(\.index), resident)
            XCTAssertEqual(try walked.map { try number(ev, fmt, "index", of: $0) }, resident, "each \(folio)'s own index")
            XCTAssertEqual(try walkEntries(ev, "xa_for_each(void *, \(xa))").map(\.index), resident)
            ev.maxEntries = 2
            XCTAssertEqual(try walkEntries(ev, "xa_for_each(void *, \(xa))").map(\.index), Array(resident.prefix(2)))
            XCTAssertTrue(ev.warnings.contains("xa_for_each: stopped after 2 entries (--max)"), "\(ev.warnings)")
            XCTAssertThrowsError(try ev.evaluate("xa_for_each(\(folio), &current->files->fdt->fd[\(fd)]->f_mapping)")) {
                XCTAssertTrue("\($0)".contains("xa_for_each needs a struct xarray, not struct address_space"), "\($0)")
            }
        }
    }

    /// A dense file's page cache (5,000 pages: leaves under two nodes under the root) walked through BPF: a
    /// node's children are read at once and the entries' `--fields` in batches after the walk (one program run
    /// each), so the walk costs a few dozen runs where per-entry reads (`--walk user`) cost one per node and copy
    /// no fields. The pages are those mincore reports; each folio's copied index is its slot's, and its copied
    /// mapping the file's address_space.
    func testALargePageCacheIsReadAheadAndItsFieldsCopiedInBatches() throws {
        let (ev, _) = try liveEvaluator()
        guard let bpf = ev.memory as? BPFMemory else { throw FixtureError("not the BPF reader") }
        try withTmpfsFile { fd in
            let page = Int(sysconf(Int32(_SC_PAGESIZE))), count = 5000
            let data = [UInt8](repeating: 0x6b, count: page * count)
            XCTAssertEqual(data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }, page * count)
            guard let map = mmap(nil, count * page, PROT_READ, MAP_SHARED, fd, 0), map != MAP_FAILED else { throw FixtureError("mmap: errno \(errno)") }
            defer { munmap(map, count * page) }
            var vector = [UInt8](repeating: 0, count: count)
            XCTAssertEqual(mincore(map, count * page, &vector), 0)
            let resident = vector.indices.filter { vector[$0] & 1 != 0 }.map { UInt64($0) }
            XCTAssertEqual(resident.count, count, "mincore: every page written is in the page cache")

            let mapping = "current->files->fdt->fd[\(fd)]->f_mapping"
            guard case .object(let m) = try ev.evaluate(mapping), let space = try? m.scalar(ev.memory) else { throw FixtureError("no f_mapping") }
            let folio = try hasMember(ev, "folio", "index") ? "struct folio" : "struct page"
            let walk = "xa_for_each(\(folio), &\(mapping)->i_pages)"
            ev.maxEntries = 100_000
            ev.walkFields = ["index", "mapping"]
            var before = bpf.runs
            let walked = try walkEntries(ev, walk)
            let runs = bpf.runs - before
            XCTAssertEqual(walked.map(\.index), resident)
            for (k, e) in walked.enumerated() {
                guard let values = ev.prefetchedValues(at: k) else { XCTFail("entry \(k): no copied fields"); break }
                XCTAssertEqual(Array(values), [e.index ?? .max, space], "entry \(k)")
            }
            XCTAssertLessThan(runs, 60, "BPF runs for \(count) entries in \(count / 64 + 3) nodes")
            ev.walkMode = .user
            before = bpf.runs
            XCTAssertEqual(try walkEntries(ev, walk).map(\.index), resident)
            XCTAssertGreaterThan(bpf.runs - before, count / 64, "a run per node")
            XCTAssertNil(ev.prefetchedValues(at: 0), "--walk user copies no fields")
        }
    }

    /// Thread ids /proc lists (every /proc/TGID/task/TID), read before and after the walk.
    func procThreads() throws -> Set<UInt64> {
        var out = Set<UInt64>()
        for tgid in try FileManager.default.contentsOfDirectory(atPath: "/proc") where UInt64(tgid) != nil {
            for tid in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(tgid)/task")) ?? [] {
                if let t = UInt64(tid) { out.insert(t) }
            }
        }
        return out
    }

    /// The pid namespace kreach's thread forks into (`pid_ns_for_children`, /proc's namespace here) keeps its
    /// pids in an IDR: every id is its struct pid's number at the namespace's level, ids ascend, and every
    /// thread /proc lists both before and after the walk (our three children among them) is there. The pids
    /// of dead session or group leaders may be there too, so the walk may list more.
    func testPidNamespaceIDRHoldsTheThreadsProcLists() throws {
        let (ev, fmt) = try liveEvaluator()
        let ns = "current->nsproxy->pid_ns_for_children"
        let level = try fmt.compact(try ev.evaluate("\(ns)->level").objectValue())
        try Child.withSleepingChildren(3) { children, _ in
            let before = try procThreads()
            let walked = try walkEntries(ev, "idr_for_each_entry(struct pid, &\(ns)->idr)")
            let after = try procThreads()
            let ids = walked.compactMap(\.index)
            XCTAssertEqual(ids.count, walked.count)
            XCTAssertEqual(ids, ids.sorted(), "ascending ids")
            XCTAssertEqual(Set(ids).count, ids.count, "each id once")
            for (e, id) in zip(walked, ids) { XCTAssertEqual(try number(ev, fmt, "numbers[\(level)].nr", of: e), id) }
            let stable = before.intersection(after)
            XCTAssertTrue(stable.isSubset(of: Set(ids)), "threads /proc lists but the IDR lacks: \(stable.subtracting(ids).sorted().prefix(10))")
            for c in children { XCTAssertTrue(ids.contains(UInt64(c.pid)), "child \(c.pid)") }
        }
    }

    /// for_each_cpu over this thread's affinity mask (task_struct.cpus_mask; BPF_PROG_TEST_RUN runs as this
    /// thread, so `current` is it) gives the CPUs /proc/thread-self/status lists as Cpus_allowed_list, also
    /// after pinning the thread to its last allowed CPU.
    func testCpumaskOfThisThreadMatchesCpusAllowedList() throws {
        let (ev, fmt) = try liveEvaluator()
        func allowed() throws -> [UInt64] {
            let status = try FileBytes.readText("/proc/thread-self/status")
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") }) else { throw FixtureError("no Cpus_allowed_list") }
            var cpus: [UInt64] = []
            for part in line.dropFirst("Cpus_allowed_list:".count).trimmingCharacters(in: .whitespaces).split(separator: ",") {
                let ends = part.split(separator: "-").compactMap { UInt64($0) }
                guard let lo = ends.first, let hi = ends.last else { throw FixtureError("bad range \(part)") }
                cpus += Array(lo...hi)
            }
            return cpus
        }
        func walked() throws -> [UInt64] {
            try walkEntries(ev, "for_each_cpu(&current->cpus_mask)").map { UInt64(try fmt.compact($0)) ?? .max }
        }
        // glibc's affinity calls through dlsym (the Glibc module has no sched_*affinity): pid 0 is this thread.
        typealias Affinity = @convention(c) (pid_t, Int, UnsafeMutableRawPointer) -> Int32
        guard let get = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "sched_getaffinity"),
              let set = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "sched_setaffinity") else { throw FixtureError("glibc has no sched_*affinity") }
        let sched_getaffinity = unsafeBitCast(get, to: Affinity.self), sched_setaffinity = unsafeBitCast(set, to: Affinity.self)
        var saved = cpu_set_t()
        XCTAssertEqual(sched_getaffinity(0, MemoryLayout<cpu_set_t>.size, &saved), 0)
        defer { _ = sched_setaffinity(0, MemoryLayout<cpu_set_t>.size, &saved) }
        XCTAssertEqual(try walked(), try allowed())
        guard let last = try allowed().last else { throw FixtureError("no CPU allowed") }
        var one = cpu_set_t()
        withUnsafeMutableBytes(of: &one) { $0[Int(last / 8)] = 1 << (last % 8) }
        XCTAssertEqual(sched_setaffinity(0, MemoryLayout<cpu_set_t>.size, &one), 0)
        XCTAssertEqual(try allowed(), [last])
        XCTAssertEqual(try walked(), [last])
        XCTAssertThrowsError(try ev.evaluate("for_each_cpu(&current->cpus_ptr)")) {
            XCTAssertTrue("\($0)".contains("for_each_cpu needs a struct cpumask"), "\($0)")
        }
    }

    /// A sleeping child's VMAs, from its mm's maple tree (`mm_struct.mm_mt`, where the kernel has it): each
    /// entry's range starts at its vm_area_struct's vm_start, and (vm_start, vm_end) are the lines of
    /// /proc/PID/maps (less [vsyscall], which is no VMA), read unchanged before and after the walk. The child's
    /// task is reached with container_of from this thread's newest child link (children.prev).
    func testMapleTreeVMAsOfAChildMatchMaps() throws {
        let (ev, fmt) = try liveEvaluator()
        guard try hasMember(ev, "mm_struct", "mm_mt") else {
            throw XCTSkip(Host.skipReason("struct mm_struct has no mm_mt here (VMAs before the maple tree)"))
        }
        func maps(_ pid: pid_t) throws -> [[UInt64]] {
            try FileBytes.readText("/proc/\(pid)/maps").split(separator: "\n").compactMap { line in
                let range = line.split(separator: " ").first?.split(separator: "-").compactMap { UInt64($0, radix: 16) } ?? []
                guard range.count == 2 else { throw FixtureError("maps line \(line)") }
                return range[0] >= 0xffff_8000_0000_0000 ? nil : range  // [vsyscall]
            }
        }
        try Child.withSleepingChildren(1) { children, _ in
            guard let child = children.first else { return }
            let task = "container_of(current->children.prev, struct task_struct, sibling)"
            XCTAssertEqual(try fmt.compact(try ev.evaluate("\(task)->pid").objectValue()), String(child.pid))
            // The child may still be mapping its libraries: retry until maps is the same before and after
            // (and the walk met no node freed under it).
            for _ in 0..<100 {
                let before = try maps(child.pid)
                let walked: [Object]
                do {
                    walked = try walkEntries(ev, "mt_for_each(struct vm_area_struct, &\(task)->mm->mm_mt)")
                } catch let error as ExpressionError where error.message.contains("changed while read") {
                    continue
                }
                let vmas = try walked.map { [try number(ev, fmt, "vm_start", of: $0), try number(ev, fmt, "vm_end", of: $0)] }
                guard try maps(child.pid) == before else { continue }
                XCTAssertEqual(vmas, before)
                XCTAssertEqual(walked.map(\.index), before.map { $0[0] })
                return
            }
            XCTFail("the child's maps kept changing")
        }
    }

    /// This process's own VMAs with 400 more mappings (neighbours differ in protection, so none merge): a maple
    /// tree of several levels, whose nodes' children are read at once and whose entries' vm_start and vm_end are
    /// copied in batches; they are the ranges /proc/self/maps lists before and after the walk, in far fewer BPF
    /// runs than nodes and entries.
    func testManyVMAsOfThisProcessAreReadAheadAndMatchMaps() throws {
        let (ev, _) = try liveEvaluator()
        guard let bpf = ev.memory as? BPFMemory else { throw FixtureError("not the BPF reader") }
        guard try hasMember(ev, "mm_struct", "mm_mt") else {
            throw XCTSkip(Host.skipReason("struct mm_struct has no mm_mt here (VMAs before the maple tree)"))
        }
        let page = Int(sysconf(Int32(_SC_PAGESIZE))), count = 400
        guard let area = mmap(nil, count * page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), area != MAP_FAILED else { throw FixtureError("mmap: errno \(errno)") }
        defer { munmap(area, count * page) }
        for k in stride(from: 0, to: count, by: 2) { XCTAssertEqual(mprotect(area + k * page, page, PROT_READ | PROT_WRITE), 0) }
        func maps() throws -> [[UInt64]] {
            try FileBytes.readText("/proc/self/maps").split(separator: "\n").compactMap { line in
                let range = line.split(separator: " ").first?.split(separator: "-").compactMap { UInt64($0, radix: 16) } ?? []
                guard range.count == 2 else { throw FixtureError("maps line \(line)") }
                return range[0] >= 0xffff_8000_0000_0000 ? nil : range  // [vsyscall]
            }
        }
        ev.maxEntries = 100_000
        ev.walkFields = ["vm_start", "vm_end"]
        for _ in 0..<20 {
            let before = try maps()
            let runs = bpf.runs
            let walked: [Object]
            do {
                walked = try walkEntries(ev, "mt_for_each(struct vm_area_struct, &current->mm->mm_mt)")
            } catch let error as ExpressionError where error.message.contains("changed while read") {
                continue
            }
            let used = bpf.runs - runs
            var vmas: [[UInt64]] = []
            for k in walked.indices { vmas.append(Array(ev.prefetchedValues(at: k) ?? [])) }
            guard try maps() == before else { continue }
            XCTAssertGreaterThan(before.count, count)
            XCTAssertEqual(vmas, before)
            XCTAssertEqual(walked.map(\.index), before.map { $0[0] })
            XCTAssertLessThan(used, before.count / 20, "BPF runs for \(before.count) VMAs")
            return
        }
        XCTFail("this process's maps kept changing")
    }

    /// container_of is the member's offset back: from a task's `tasks` link to the task, and through a path.
    func testContainerOfUndoesMemberAddress() throws {
        let (ev, fmt) = try liveEvaluator()
        let task = try ev.evaluate("current").objectValue().scalar(ev.memory)
        XCTAssertEqual(try ev.evaluate("container_of(&current->tasks, struct task_struct, tasks)").objectValue().scalar(ev.memory), task)
        XCTAssertEqual(try ev.evaluate("container_of(&current->se.run_node, struct task_struct, se.run_node)").objectValue().scalar(ev.memory), task)
        XCTAssertEqual(try fmt.compact(try ev.evaluate("container_of(&current->tasks, struct task_struct, tasks)->pid").objectValue()), try FileBytes.readText("/proc/thread-self/stat").split(separator: " ").first.map(String.init))
        XCTAssertThrowsError(try ev.evaluate("container_of(current->tasks, struct task_struct, tasks)")) {
            XCTAssertTrue("\($0)".contains("container_of() takes a pointer, not struct list_head"), "\($0)")
        }
        XCTAssertThrowsError(try ev.evaluate("container_of(&current->tasks, struct task_struct, nosuch)")) {
            XCTAssertTrue("\($0)".contains("struct task_struct has no member nosuch"), "\($0)")
        }
    }
}
