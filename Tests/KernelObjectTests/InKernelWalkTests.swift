import Foundation
import Glibc
import XCTest
@testable import Memory
import BPF
import CKreach
@testable import KernelObject
import KernelSource
import KreachSupport
import KreachTestSupport

/// List walks followed inside the kernel (Memory/BPFListWalk: one BPF run per batch of nodes, fields copied
/// along) against the kernel's own counts: the inodes of a fresh tmpfs, this thread's children in /proc.
final class InKernelWalkTests: XCTestCase {
    /// Files made on the tmpfs: more than one batch (1024 nodes per run), so the walk resumes across runs.
    static let files = 2500

    func evaluator() throws -> (Evaluator, ObjectFormatter, BPFMemory) {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: BPF needs CAP_BPF + CAP_PERFMON, mount needs CAP_SYS_ADMIN")) }
        let memory = try BPFMemory()
        let ev = try Evaluator(kernel: try Kernel(source: .live), memory: memory)
        return (ev, ObjectFormatter(evaluator: ev), memory)
    }

    func entries(_ ev: Evaluator, _ source: String) throws -> [Object] {
        guard case .entries(let entries, _) = try ev.evaluate(source) else { throw FixtureError("\(source) is not a walk") }
        return Array(entries)
    }

    /// A fresh tmpfs with `files` files of different sizes (sparse) and modes, its root open: (mount point, fd of
    /// the root, [mode, size] by inode number, from stat).
    func tmpfs() throws -> (String, Int32, [UInt64: [UInt64]]) {
        let dir = NSTemporaryDirectory() + "kreach-walk-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        guard mkdir(dir, 0o700) == 0 else { throw FixtureError("mkdir \(dir): errno \(errno)") }
        guard mount("none", dir, "tmpfs", 0, "mode=0700") == 0 else {
            rmdir(dir)
            throw XCTSkip(Host.skipReason("cannot mount a tmpfs (errno \(errno))"))
        }
        var inodes: [UInt64: [UInt64]] = [:]
        var st = stat()
        for k in 0..<Self.files {
            let fd = open("\(dir)/f\(k)", O_CREAT | O_WRONLY | O_EXCL, 0o600)
            guard fd >= 0, ftruncate(fd, off_t(k) * 4097) == 0, fchmod(fd, mode_t(0o400 | k % 0o100)) == 0, fstat(fd, &st) == 0 else {
                throw FixtureError("create \(dir)/f\(k): errno \(errno)")
            }
            inodes[UInt64(st.st_ino)] = [UInt64(st.st_mode), UInt64(st.st_size)]
            close(fd)
        }
        let root = open(dir, O_RDONLY | O_DIRECTORY)
        guard root >= 0, fstat(root, &st) == 0 else { throw FixtureError("open \(dir): errno \(errno)") }
        inodes[UInt64(st.st_ino)] = [UInt64(st.st_mode), UInt64(st.st_size)]
        return (dir, root, inodes)
    }

    func unmount(_ dir: String, _ fd: Int32) {
        close(fd)
        umount2(dir, Int32(MNT_DETACH))
        rmdir(dir)
    }

    static func head(_ fd: Int32) -> String { "&current->files->fdt->fd[\(fd)]->f_inode->i_sb->s_inodes" }

    static func walk(_ fd: Int32) -> String { "list_for_each_entry(struct inode, \(head(fd)), i_sb_list)" }

    /// Every inode of the superblock, walked in the kernel with i_ino, i_mode and i_size (8, 2 and 8 bytes)
    /// copied along by the walk program and printed as `show --fields` prints them: the files made plus the
    /// root, each with the inode number, mode and size stat gives; the walk through per-entry reads
    /// (--walk=user) prints the same lines, entries in the same order, and copies the same fields as it goes
    /// (as a dump's walk does).
    func testTmpfsInodesInKernelMatchStat() throws {
        let (ev, fmt, _) = try evaluator()
        let (dir, fd, inodes) = try tmpfs()
        defer { unmount(dir, fd) }
        let fields = ["i_ino", "i_mode", "i_size"]
        let renderer = ShowRenderer(evaluator: ev, formatter: fmt, fields: fields)
        ev.walkMode = .kernel
        let inKernel = renderer.render(Self.walk(fd))
        XCTAssertNil(inKernel.error)
        XCTAssertEqual(inKernel.lines.count, Self.files + 1, "the files and the root")
        // `0xADDRESS i_ino=N i_mode=M i_size=S`: [mode, size] by inode number.
        var walked: [UInt64: [UInt64]] = [:]
        for line in inKernel.lines {
            let words = line.split(separator: " ")
            let values = zip(fields, words.dropFirst()).compactMap { f, w in w.hasPrefix(f + "=") ? UInt64(w.dropFirst(f.count + 1)) : nil }
            guard words.count == 4, values.count == 3 else { throw FixtureError("not a --fields line: \(line)") }
            walked[values[0]] = Array(values[1...])
        }
        XCTAssertEqual(walked.count, inKernel.lines.count, "one line per inode")
        XCTAssertEqual(walked, inodes)
        // The same values as objects (kreach-bench's and --json's path).
        guard case .entries(let entries, _) = try ev.evaluate(Self.walk(fd)), let last = entries.last,
              let size = ev.prefetchedField("i_size", of: last) else { throw FixtureError("i_size not copied by the in-kernel walk") }
        XCTAssertEqual(try fmt.compact(size), inKernel.lines.last?.split(separator: "=").last.map(String.init))
        ev.walkMode = .user
        let perEntry = renderer.render(Self.walk(fd))
        XCTAssertNil(perEntry.error)
        XCTAssertEqual(perEntry.lines, inKernel.lines)
        guard case .entries(let read, _) = try ev.evaluate(Self.walk(fd)), !read.isEmpty else { throw FixtureError("no entries") }
        XCTAssertEqual(try read.map { e -> UInt64 in
            guard let v = ev.prefetchedField("i_ino", of: e) else { throw FixtureError("i_ino not copied by the per-entry walk") }
            return UInt64(try fmt.compact(v)) ?? 0
        }.sorted(), walked.keys.sorted())
    }

    /// --max bounds the in-kernel walk like the per-entry one: the first entries, and the note.
    func testInKernelWalkStopsAtMax() throws {
        let (ev, _, _) = try evaluator()
        let (dir, fd, _) = try tmpfs()
        defer { unmount(dir, fd) }
        ev.walkMode = .user
        ev.maxEntries = 1500
        let perEntry = try entries(ev, Self.walk(fd))
        ev.walkMode = .kernel
        let inKernel = try entries(ev, Self.walk(fd))
        XCTAssertEqual(inKernel.count, 1500)
        XCTAssertEqual(inKernel.map(\.address), perEntry.map(\.address))
        XCTAssertTrue(ev.warnings.contains("list_for_each_entry: stopped after 1500 entries (--max)"), "\(ev.warnings)")
    }

    /// This thread's children, walked in the kernel with pid copied along, are /proc/thread-self/children.
    func testChildrenInKernelMatchProc() throws {
        let (ev, fmt, _) = try evaluator()
        try Child.withSleepingChildren(3) { children, listed in
            ev.walkMode = .kernel
            ev.walkFields = ["pid"]
            let walked = try entries(ev, "list_for_each_entry(struct task_struct, &current->children, sibling)").map { e -> String in
                guard let v = ev.prefetchedField("pid", of: e) else { throw FixtureError("pid not copied") }
                return try fmt.compact(v)
            }
            XCTAssertEqual(walked, listed)
        }
    }

    /// Fields that sit together are copied by one read: `struct inode`'s i_mode (2 bytes), i_ino and i_size
    /// seen from i_sb_list (6.1's offsets 0, 64, 80 and 264) take three helper calls per node, not four, and
    /// each field's bytes and the next pointer land where the decoder looks. The live walks above check the values.
    func testFieldsThatSitTogetherAreCopiedByOneRead() throws {
        typealias Layout = BPFListWalk.RecordLayout
        let inode = Layout(fields: [.init(offset: -264, size: 2), .init(offset: -200, size: 8), .init(offset: -184, size: 8)], nextOffset: 0)
        XCTAssertEqual(inode.spans, [.init(offset: -264, size: 2, position: 8), .init(offset: -200, size: 24, position: 10),
                                     .init(offset: 0, size: 8, position: 34)])
        XCTAssertEqual(inode.fieldPositions, [8, 10, 26])
        XCTAssertEqual(inode.nextPosition, 34)
        XCTAssertEqual(inode.stride, 48)
        // Out of order, overlapping, and the next pointer inside the span (an hlist_node's next at 0 and a
        // field 4 bytes on): one read; the fields keep their order.
        let close = Layout(fields: [.init(offset: 12, size: 4), .init(offset: 8, size: 8), .init(offset: 8, size: 1)], nextOffset: 0)
        XCTAssertEqual(close.spans, [.init(offset: 0, size: 16, position: 8)])
        XCTAssertEqual(close.fieldPositions, [20, 16, 16])
        XCTAssertEqual(close.nextPosition, 8)
        XCTAssertEqual(close.stride, 24)
        // A field just past the window starts a read of its own.
        let apart = Layout(fields: [.init(offset: 32, size: 1)], nextOffset: 0)
        XCTAssertEqual(apart.spans.count, 2)
        let calls = BPFListWalk.program(mapFD: 0, layout: inode, batch: 4).filter { $0 == .call(BPF_FUNC_probe_read_kernel) }.count
        XCTAssertEqual(calls, 4 * 3)
    }

    /// A walk whose end never comes (the head given is not in the ring) goes round the ring and meets its
    /// first node again: a loop, named. A first node at a user address faults there; NULL ends the chain.
    func testLoopFaultAndNullSayWhere() throws {
        let (ev, _, memory) = try evaluator()
        let (dir, fd, _) = try tmpfs()
        defer { unmount(dir, fd) }
        guard case .object(let next) = try ev.evaluate(String(Self.head(fd).dropFirst()) + ".next"), let at = next.address else { throw FixtureError("no s_inodes.next") }
        let first = try memory.read(at, count: 8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        let chain = try BPFListWalk(nextOffset: 0, fields: [])
        let (nodes, end) = try chain.walk(first: first, head: 1, maxEntries: 100_000)
        XCTAssertEqual(end, .loop(node: first))
        XCTAssertEqual(nodes.count, Self.files + 2, "the entries and the real head, then the first again")
        XCTAssertThrowsError(try chain.walk(first: 0x1000, head: 1, maxEntries: 10)) { error in
            XCTAssertTrue("\(error)".contains("0x1000"), "\(error)")
        }
        XCTAssertEqual(try chain.walk(first: 0, head: 1, maxEntries: 10).end, .nullNext)
        // Through the walker: --walk=kernel where only per-entry reads exist is an error, not a silent fallback.
        ev.walkMode = .kernel
        XCTAssertThrowsError(try ContainerHelper.rbtreeInorderForEachEntry.walk(head: 0, headType: "rb_root", linkOffset: 0, memory: memory,
                                                                                  vmlinux: ev.types.vmlinux, maxEntries: 1, mode: .kernel)) { error in
            XCTAssertTrue("\(error)".contains("no in-kernel walk"), "\(error)")
        }
    }

    /// hlist_for_each_entry in the kernel (the chain ends at NULL): the tasks of this thread's struct pid
    /// (PIDTYPE_PID) are this thread alone, its pid the TID /proc/thread-self names.
    func testHlistInKernelIsThisThread() throws {
        let (ev, fmt, _) = try evaluator()
        ev.walkMode = .kernel
        ev.walkFields = ["pid"]
        let walked = try entries(ev, "hlist_for_each_entry(struct task_struct, &current->thread_pid->tasks[0], pid_links[0])")
        XCTAssertEqual(walked.count, 1)
        guard let first = walked.first, let pid = ev.prefetchedField("pid", of: first) else { throw FixtureError("pid not copied") }
        // The kernel's own name for this thread: /proc/thread-self -> PID/task/TID.
        let tid = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self").split(separator: "/").last.map(String.init)
        XCTAssertEqual(try fmt.compact(pid), tid)
        guard case .object(let me) = try ev.evaluate("&*current") else { throw FixtureError("no current") }
        XCTAssertEqual(first.address, try me.scalar(ev.memory))
    }
}
