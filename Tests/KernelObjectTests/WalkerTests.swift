import Foundation
import Glibc
import XCTest
import Memory
@testable import KernelObject
import KernelSource
import KreachSupport
import KreachTestSupport

/// The container walkers (Sources/KernelObject/Walkers) on the live kernel, from heads reached through
/// `current`, against the kernel's own listings in /proc.
final class WalkerTests: XCTestCase {
    func field(_ ev: Evaluator, _ fmt: ObjectFormatter, _ name: String, _ entries: [Object]) throws -> [String] {
        try entries.map { try fmt.compact(try ev.evaluate(field: name, of: $0)) }
    }

    /// This thread's children (task_struct.children, linked through sibling) walked forward are the pids
    /// /proc/thread-self/children lists (the kernel walks the same list, oldest first); reversed, the reverse.
    func testChildrenListForwardAndReverseMatchProc() throws {
        let (ev, fmt) = try liveEvaluator()
        try Child.withSleepingChildren(3) { children, listed in
            XCTAssertEqual(Set(listed), Set(children.map { String($0.pid) }), "the kernel lists the three children")
            let forward = try field(ev, fmt, "pid", try walkEntries(ev, "list_for_each_entry(struct task_struct, &current->children, sibling)"))
            XCTAssertEqual(forward, listed)
            let reverse = try field(ev, fmt, "pid", try walkEntries(ev, "list_for_each_entry_reverse(struct task_struct, &current->children, sibling)"))
            XCTAssertEqual(reverse, listed.reversed())
            // Bounded the same way: the newest child only.
            ev.maxEntries = 1
            XCTAssertEqual(try field(ev, fmt, "pid", try walkEntries(ev, "list_for_each_entry_reverse(struct task_struct, &current->children, sibling)")),
                           [listed.last ?? ""])
            XCTAssertTrue(ev.warnings.contains("list_for_each_entry_reverse: stopped after 1 entries (--max)"), "\(ev.warnings)")
        }
    }

    /// A listening TCP socket sits in a listening-hash bucket (struct inet_listen_hashbucket), an hlist_nulls
    /// chain ended by an odd "nulls" value. Its node's pprev points at the pointer to it (the bucket's first or
    /// the previous node's next), so read as a head it starts the walk at our socket; the walk then ends at the
    /// nulls marker. Every entry is a socket /proc/net/tcp{,6} lists as listening (state 0A) on its port.
    /// (Listening on INADDR_ANY needs no interface up, not even loopback.)
    func testHlistNullsWalkOfATCPListeningChain() throws {
        let (ev, fmt) = try liveEvaluator()
        // Feature detection: listeners are on hlist_nulls chains since the listening hash's nulls_head.
        let bucket = ev.types.vmlinux.lookup("inet_listen_hashbucket").first { (try? ev.types.vmlinux.kind(of: $0)) == .structure }
        guard let bucket, try CType.btf(ev.types.vmlinux, bucket).member("nulls_head") != nil else {
            throw XCTSkip(Host.skipReason("this kernel's listening hash is not an hlist_nulls (no inet_listen_hashbucket.nulls_head)"))
        }
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(listener, 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        func withSockaddr<T>(_ a: inout sockaddr_in, _ body: (UnsafeMutablePointer<sockaddr>) -> T) -> T {
            withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1, body) }
        }
        XCTAssertEqual(withSockaddr(&address) { bind(listener, $0, length) }, 0)
        XCTAssertEqual(listen(listener, 1), 0)
        XCTAssertEqual(withSockaddr(&address) { getsockname(listener, $0, &length) }, 0)
        let port = UInt16(bigEndian: address.sin_port)

        let sk = "((struct socket *)current->files->fdt->fd[\(listener)]->private_data)->sk"
        let walk = "hlist_nulls_for_each_entry(struct sock_common, (struct hlist_nulls_head *)\(sk)->__sk_common.skc_nulls_node.pprev, skc_nulls_node)"
        let chain = try walkEntries(ev, walk)
        XCTAssertGreaterThanOrEqual(chain.count, 1)
        XCTAssertEqual(chain.first?.address, try ev.evaluate(sk).objectValue().scalar(ev.memory), "the walk starts at our socket")
        let ports = try field(ev, fmt, "skc_num", chain)
        XCTAssertEqual(ports.first, String(port))
        var listening = Set<String>()
        for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = try? FileBytes.readText(file) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let f = line.split(separator: " ")
                guard f.count > 3, f[3] == "0A", let l = f[1].split(separator: ":").last, let p = UInt16(l, radix: 16) else { continue }
                listening.insert(String(p))
            }
        }
        XCTAssertTrue(listening.contains(String(port)), "/proc/net/tcp lists our listener")
        for p in ports { XCTAssertTrue(listening.contains(p), "walked a socket on port \(p), which /proc/net/tcp doesn't list as listening") }
        // The head's type is checked.
        XCTAssertThrowsError(try ev.evaluate("hlist_nulls_for_each_entry(struct sock_common, &\(sk)->__sk_common.skc_nulls_node, skc_nulls_node)")) {
            XCTAssertTrue("\($0)".contains("hlist_nulls_for_each_entry needs a struct hlist_nulls_head, not struct hlist_nulls_node"), "\($0)")
        }
    }

    /// epoll keeps its watched files in an rb_root_cached ordered by (file, fd); /proc/PID/fdinfo/EPFD lists
    /// them in that order (ep_show_fdinfo walks rb_first_cached/rb_next). The walk gives the same fds, through
    /// the rb_root_cached and through the rb_root inside it.
    func testRbtreeWalkOfEpollItemsMatchesFdinfo() throws {
        let (ev, fmt) = try liveEvaluator()
        // glibc's epoll calls through dlsym (the Glibc module has no epoll); struct epoll_event is packed:
        // u32 events, u64 data.
        func symbol<T>(_ name: String, _: T.Type) throws -> T {
            guard let p = dlsym(UnsafeMutableRawPointer(bitPattern: 0), name) else { throw FixtureError("glibc has no \(name)") }
            return unsafeBitCast(p, to: T.self)
        }
        let epollCreate1 = try symbol("epoll_create1", (@convention(c) (Int32) -> Int32).self)
        let epollCtl = try symbol("epoll_ctl", (@convention(c) (Int32, Int32, Int32, UnsafeRawPointer) -> Int32).self)
        let ep = epollCreate1(0)
        XCTAssertGreaterThanOrEqual(ep, 0)
        var fds: [Int32] = []
        defer { for fd in fds + [ep] where fd >= 0 { close(fd) } }
        for _ in 0..<3 {
            var p: [Int32] = [0, 0]
            XCTAssertEqual(pipe(&p), 0)
            fds += p
        }
        for fd in fds.reversed() {  // inserted out of order
            var event = [UInt8](repeating: 0, count: 12)
            event[0] = 1  // EPOLLIN
            event[4] = UInt8(fd)
            XCTAssertEqual(event.withUnsafeBytes { epollCtl(ep, 1 /* EPOLL_CTL_ADD */, fd, $0.baseAddress!) }, 0)
        }
        let fdinfo = try FileBytes.readText("/proc/self/fdinfo/\(ep)")
        let listed = fdinfo.split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("tfd:") else { return nil }
            return line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.map(String.init)
        }
        XCTAssertEqual(Set(listed), Set(fds.map { String($0) }))
        let root = "((struct eventpoll *)current->files->fdt->fd[\(ep)]->private_data)->rbr"
        let cached = try field(ev, fmt, "ffd.fd", try walkEntries(ev, "rbtree_inorder_for_each_entry(struct epitem, &\(root), rbn)"))
        XCTAssertEqual(cached, listed)
        let plain = try field(ev, fmt, "ffd.fd", try walkEntries(ev, "rbtree_inorder_for_each_entry(struct epitem, &\(root).rb_root, rbn)"))
        XCTAssertEqual(plain, listed)
        XCTAssertThrowsError(try ev.evaluate("rbtree_inorder_for_each_entry(struct epitem, &\(root).rb_leftmost, rbn)")) {
            XCTAssertTrue("\($0)".contains("needs a struct rb_root or struct rb_root_cached"), "\($0)")
        }
    }
}

extension WalkerTests {
    /// An io_uring set up with IORING_SETUP_DEFER_TASKRUN keeps the task work of completed requests on an
    /// llist (`io_ring_ctx.work_llist`, llist_add: newest first) until the ring is entered to wait. Three reads
    /// of empty pipes complete when the pipes are written (in order 0, 1, 2): the walk over that llist gives
    /// their requests, newest first, and the completions the kernel then posts carry the same user_data
    /// (in the list's order or its reverse, as the kernel runs it).
    func testLlistWalkOfIoUringDeferredWork() throws {
        let (ev, fmt) = try liveEvaluator()
        let btf = ev.types.vmlinux
        guard let ctx = btf.lookup("io_ring_ctx").first(where: { (try? btf.kind(of: $0)) == .structure }),
              try CType.btf(btf, ctx).member("work_llist") != nil else {
            throw XCTSkip(Host.skipReason("no io_ring_ctx.work_llist in this kernel's BTF (io_uring without DEFER_TASKRUN)"))
        }
        typealias Syscall = @convention(c) (Int, Int, Int, Int, Int, Int, Int) -> Int
        guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "syscall") else { throw FixtureError("glibc has no syscall") }
        let syscall6 = unsafeBitCast(sym, to: Syscall.self)
        // struct io_uring_params: 120 bytes; flags at 8; sq_off at 40 (head, tail, ring_mask, ring_entries, flags,
        // dropped, array); cq_off at 80 (head, tail, ring_mask, ring_entries, overflow, cqes).
        var params = [UInt8](repeating: 0, count: 120)
        let singleIssuer: UInt32 = 1 << 12, deferTaskrun: UInt32 = 1 << 13
        params.withUnsafeMutableBytes { $0.storeBytes(of: singleIssuer | deferTaskrun, toByteOffset: 8, as: UInt32.self) }
        let ring = params.withUnsafeMutableBytes { syscall6(425 /* io_uring_setup */, 4, Int(bitPattern: $0.baseAddress), 0, 0, 0, 0) }
        guard ring >= 0 else { throw XCTSkip(Host.skipReason("io_uring_setup with DEFER_TASKRUN refused (errno \(errno))")) }
        let fd = Int32(ring)
        defer { close(fd) }
        func u32(_ offset: Int) -> Int { Int(params.withUnsafeBytes { $0.load(fromByteOffset: offset, as: UInt32.self) }) }
        let sqEntries = u32(0)
        let (sqTail, sqArray) = (u32(44), u32(64))
        let (cqHead, cqTail, cqes) = (u32(80), u32(84), u32(100))
        let ringSize = max(sqArray + sqEntries * 4, cqes + u32(4) * 16)
        guard let rings = mmap(nil, ringSize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0), rings != MAP_FAILED,
              let sqes = mmap(nil, sqEntries * 64, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0x1000_0000), sqes != MAP_FAILED else {
            throw FixtureError("mmap of the io_uring: errno \(errno)")
        }
        defer { munmap(rings, ringSize); munmap(sqes, sqEntries * 64) }
        // The ring masks live in the ring, at the offsets the parameters give.
        let sqMask = Int(rings.load(fromByteOffset: u32(48), as: UInt32.self)), cqMask = Int(rings.load(fromByteOffset: u32(88), as: UInt32.self))
        var pipes: [[Int32]] = []
        defer { for p in pipes { close(p[0]); close(p[1]) } }
        var buffer = [UInt8](repeating: 0, count: 3 * 8)
        let userData: [UInt64] = [0x6b72_6561_6300_0001, 0x6b72_6561_6300_0002, 0x6b72_6561_6300_0003]
        let tail = rings.load(fromByteOffset: sqTail, as: UInt32.self)
        try buffer.withUnsafeMutableBytes { buf in
            for (k, data) in userData.enumerated() {
                var p: [Int32] = [0, 0]
                guard pipe(&p) == 0 else { throw FixtureError("pipe: errno \(errno)") }
                pipes.append(p)
                let slot = (Int(tail) + k) & sqMask
                let sqe = sqes + slot * 64
                sqe.initializeMemory(as: UInt8.self, repeating: 0, count: 64)
                sqe.storeBytes(of: 22 /* IORING_OP_READ */, toByteOffset: 0, as: UInt8.self)
                sqe.storeBytes(of: p[0], toByteOffset: 4, as: Int32.self)
                sqe.storeBytes(of: UInt64(UInt(bitPattern: buf.baseAddress! + k * 8)), toByteOffset: 16, as: UInt64.self)
                sqe.storeBytes(of: 8, toByteOffset: 24, as: UInt32.self)
                sqe.storeBytes(of: data, toByteOffset: 32, as: UInt64.self)
                rings.storeBytes(of: UInt32(slot), toByteOffset: sqArray + slot * 4, as: UInt32.self)
            }
        }
        rings.storeBytes(of: tail &+ 3, toByteOffset: sqTail, as: UInt32.self)
        XCTAssertEqual(syscall6(426 /* io_uring_enter */, Int(fd), 3, 0, 0, 0, 0), 3, "three reads submitted")
        for p in pipes { XCTAssertEqual(write(p[1], "x", 1), 1) }

        let work = "llist_for_each_entry(struct io_kiocb, &((struct io_ring_ctx *)current->files->fdt->fd[\(fd)]->private_data)->work_llist, io_task_work.node)"
        let walked = try walkEntries(ev, work).map { try fmt.compact(try ev.evaluate(field: "cqe.user_data", of: $0)) }
        XCTAssertEqual(walked, userData.reversed().map { String($0) }, "newest first")

        // The kernel's own account: wait for the three completions (waiting runs the deferred work; with
        // min_complete 0, 6.1 returns before running it) and read their user_data. The wait is bounded:
        // IORING_ENTER_EXT_ARG's struct io_uring_getevents_arg {sigmask, sigmask_sz, pad, ts} with ts → 10 s.
        var timeout: (Int, Int) = (10, 0)  // struct __kernel_timespec
        let waited = withUnsafeMutablePointer(to: &timeout) { ts in
            var arg: (UInt64, UInt32, UInt32, UInt64) = (0, 0, 0, UInt64(UInt(bitPattern: ts)))
            return withUnsafeMutablePointer(to: &arg) { a in
                syscall6(426, Int(fd), 0, 3, 1 | 8 /* IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG */, Int(bitPattern: a), 24)
            }
        }
        XCTAssertEqual(waited, 0, "io_uring_enter waiting for 3 completions: errno \(errno)")
        let head = rings.load(fromByteOffset: cqHead, as: UInt32.self), end = rings.load(fromByteOffset: cqTail, as: UInt32.self)
        XCTAssertEqual(end &- head, 3)
        let completed = (0..<Int(end &- head)).map { k in
            String(rings.load(fromByteOffset: cqes + ((Int(head) + k) & cqMask) * 16, as: UInt64.self))
        }
        // The same requests; the order the list is run in is the kernel's choice (6.1 runs it as it stands, newest
        // first; later kernels reverse it and post the oldest first).
        XCTAssertEqual(completed.sorted(), walked.sorted())
        XCTAssert(completed == walked || completed.reversed() == walked, "completions \(completed), walk \(walked)")
        XCTAssertEqual(try walkEntries(ev, work).count, 0, "the list is run and emptied by the wait")
    }
}

extension XCTestCase {
    /// An evaluator of the live kernel reading through BPF, and its formatter; skips when not root.
    func liveEvaluator() throws -> (Evaluator, ObjectFormatter) {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: BPF needs CAP_BPF + CAP_PERFMON, kallsyms CAP_SYSLOG, mount CAP_SYS_ADMIN")) }
        let ev = try Evaluator(kernel: try Kernel(source: .live), memory: try BPFMemory())
        return (ev, ObjectFormatter(evaluator: ev))
    }

    /// The entries of the walk `source`.
    func walkEntries(_ ev: Evaluator, _ source: String) throws -> [Object] {
        guard case .entries(let entries, _) = try ev.evaluate(source) else { throw FixtureError("\(source) is not a walk") }
        return Array(entries)
    }
}

extension Evaluation {
    func objectValue() throws -> Object {
        guard case .object(let o) = self else { throw FixtureError("not an object") }
        return o
    }
}
