import Foundation
import Glibc
import XCTest
import BPF
@testable import KernelObject
import KernelSource
import KreachSupport
import KreachTestSupport

/// The container walkers (Sources/KernelObject/Walkers) on the live kernel, from heads reached through
/// `current`, against the kernel's own listings in /proc.
final class WalkerTests: XCTestCase {
    func evaluator() throws -> (Evaluator, ObjectFormatter) {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: BPF needs CAP_BPF + CAP_PERFMON, kallsyms CAP_SYSLOG")) }
        let ev = try Evaluator(kernel: try Kernel(source: .live), memory: try BPFMemory())
        return (ev, ObjectFormatter(evaluator: ev))
    }

    func entries(_ ev: Evaluator, _ source: String) throws -> [Object] {
        guard case .entries(let entries, _) = try ev.evaluate(source) else { throw FixtureError("\(source) is not a walk") }
        return entries
    }

    func field(_ ev: Evaluator, _ fmt: ObjectFormatter, _ name: String, _ entries: [Object]) throws -> [String] {
        try entries.map { try fmt.compact(try ev.evaluate(field: name, of: $0)) }
    }

    /// This thread's children (task_struct.children, linked through sibling) walked forward are the pids
    /// /proc/thread-self/children lists (the kernel walks the same list, oldest first); reversed, the reverse.
    func testChildrenListForwardAndReverseMatchProc() throws {
        let (ev, fmt) = try evaluator()
        guard FileManager.default.fileExists(atPath: "/proc/thread-self/children") else {
            throw XCTSkip(Host.skipReason("no /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN off)"))
        }
        var children: [Child] = []
        defer {
            for c in children {
                c.signal(SIGKILL)
                _ = try? c.wait(timeout: Run.defaultTimeout)
            }
        }
        for _ in 0..<3 { children.append(try Child(["sleep", "600"])) }
        let listed = try FileBytes.readText("/proc/thread-self/children").split(separator: " ").map(String.init)
        XCTAssertEqual(Set(listed), Set(children.map { String($0.pid) }), "the kernel lists the three children")
        let forward = try field(ev, fmt, "pid", try entries(ev, "list_for_each_entry(struct task_struct, &current->children, sibling)"))
        XCTAssertEqual(forward, listed)
        let reverse = try field(ev, fmt, "pid", try entries(ev, "list_for_each_entry_reverse(struct task_struct, &current->children, sibling)"))
        XCTAssertEqual(reverse, listed.reversed())
        // Bounded the same way: the newest child only.
        ev.maxEntries = 1
        XCTAssertEqual(try field(ev, fmt, "pid", try entries(ev, "list_for_each_entry_reverse(struct task_struct, &current->children, sibling)")),
                       [listed.last ?? ""])
        XCTAssertTrue(ev.warnings.contains("list_for_each_entry_reverse: stopped after 1 entries (--max)"), "\(ev.warnings)")
    }

    /// A TCP connection over loopback: the client socket sits in an established-hash bucket, an
    /// hlist_nulls chain ended by an odd "nulls" value. Its node's pprev points at the pointer to it (the
    /// bucket's first or the previous node's next), so read as a head it starts the walk at our socket;
    /// the walk then ends at the nulls marker. Every entry is an established socket /proc/net/tcp lists.
    func testHlistNullsWalkOfATCPEstablishedChain() throws {
        let (ev, fmt) = try evaluator()
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0), client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(listener, 0)
        XCTAssertGreaterThanOrEqual(client, 0)
        var accepted: Int32 = -1
        defer { for fd in [listener, client, accepted] where fd >= 0 { close(fd) } }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        func withSockaddr<T>(_ a: inout sockaddr_in, _ body: (UnsafeMutablePointer<sockaddr>) -> T) -> T {
            withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1, body) }
        }
        XCTAssertEqual(withSockaddr(&address) { bind(listener, $0, length) }, 0)
        XCTAssertEqual(listen(listener, 1), 0)
        XCTAssertEqual(withSockaddr(&address) { getsockname(listener, $0, &length) }, 0)
        XCTAssertEqual(withSockaddr(&address) { connect(client, $0, length) }, 0)  // loopback: done when it returns
        accepted = accept(listener, nil, nil)
        XCTAssertGreaterThanOrEqual(accepted, 0)
        var local = sockaddr_in()
        XCTAssertEqual(withSockaddr(&local) { getsockname(client, $0, &length) }, 0)
        let clientPort = UInt16(bigEndian: local.sin_port), serverPort = UInt16(bigEndian: address.sin_port)

        let sk = "((struct socket *)current->files->fdt->fd[\(client)]->private_data)->sk"
        let walk = "hlist_nulls_for_each_entry(struct sock_common, (struct hlist_nulls_head *)\(sk)->__sk_common.skc_nulls_node.pprev, skc_nulls_node)"
        let chain = try entries(ev, walk)
        XCTAssertGreaterThanOrEqual(chain.count, 1)
        XCTAssertEqual(chain.first?.address, try ev.evaluate(sk).objectValue().scalar(ev.memory), "the walk starts at our socket")
        XCTAssertEqual(try field(ev, fmt, "skc_num", chain).first, String(clientPort))
        // Each entry's local and remote ports are those of an established (01) or time-wait (06) socket in /proc/net/tcp{,6}.
        var listedPorts = Set<String>()
        for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = try? FileBytes.readText(file) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let f = line.split(separator: " ")
                guard f.count > 3, let l = f[1].split(separator: ":").last, let r = f[2].split(separator: ":").last,
                      let lp = UInt16(l, radix: 16), let rp = UInt16(r, radix: 16) else { continue }
                listedPorts.insert("\(lp)->\(rp)")
            }
        }
        XCTAssertTrue(listedPorts.contains("\(clientPort)->\(serverPort)"), "/proc/net/tcp lists our connection")
        let locals = try field(ev, fmt, "skc_num", chain)
        let remotes = try field(ev, fmt, "skc_dport", chain).map { UInt16($0).map { String(UInt16(bigEndian: $0)) } ?? $0 }
        for (l, r) in zip(locals, remotes) {
            XCTAssertTrue(listedPorts.contains("\(l)->\(r)"), "walked \(l)->\(r), not in /proc/net/tcp")
        }
        // The head's type is checked.
        XCTAssertThrowsError(try ev.evaluate("hlist_nulls_for_each_entry(struct sock_common, &\(sk)->__sk_common.skc_nulls_node, skc_nulls_node)")) {
            XCTAssertTrue("\($0)".contains("hlist_nulls_for_each_entry needs a struct hlist_nulls_head, not struct hlist_nulls_node"), "\($0)")
        }
    }

    /// epoll keeps its watched files in an rb_root_cached ordered by (file, fd); /proc/PID/fdinfo/EPFD lists
    /// them in that order (ep_show_fdinfo walks rb_first_cached/rb_next). The walk gives the same fds, through
    /// the rb_root_cached and through the rb_root inside it.
    func testRbtreeWalkOfEpollItemsMatchesFdinfo() throws {
        let (ev, fmt) = try evaluator()
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
        let cached = try field(ev, fmt, "ffd.fd", try entries(ev, "rbtree_inorder_for_each_entry(struct epitem, &\(root), rbn)"))
        XCTAssertEqual(cached, listed)
        let plain = try field(ev, fmt, "ffd.fd", try entries(ev, "rbtree_inorder_for_each_entry(struct epitem, &\(root).rb_root, rbn)"))
        XCTAssertEqual(plain, listed)
        XCTAssertThrowsError(try ev.evaluate("rbtree_inorder_for_each_entry(struct epitem, &\(root).rb_leftmost, rbn)")) {
            XCTAssertTrue("\($0)".contains("needs a struct rb_root or struct rb_root_cached"), "\($0)")
        }
    }
}

extension Evaluation {
    func objectValue() throws -> Object {
        guard case .object(let o) = self else { throw FixtureError("not an object") }
        return o
    }
}
