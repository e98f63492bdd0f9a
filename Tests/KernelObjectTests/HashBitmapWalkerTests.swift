import Foundation
import Glibc
import XCTest
import Memory
@testable import KernelObject
import KernelSource
import KreachSupport
import KreachTestSupport

/// hash_for_each (Walkers/Hash.swift) over hlist and hlist_nulls bucket arrays, the in-kernel hlist_nulls
/// chain walk, and for_each_set_bit (Walkers/Bitmap.swift), on the live kernel from heads reached through
/// `current`, against the kernel's own views: if_nameindex (netlink), /proc/net/tcp, the socket calls,
/// /proc/thread-self/status.
final class HashBitmapWalkerTests: XCTestCase {
    func memberType(_ ev: Evaluator, _ structure: String, _ member: String) throws -> CType? {
        let btf = ev.types.vmlinux
        guard let id = btf.lookup(structure).first(where: { (try? btf.kind(of: $0)) == .structure }) else { return nil }
        return try CType.btf(btf, id).member(member)?.type
    }

    func number(_ ev: Evaluator, _ fmt: ObjectFormatter, _ field: String, of entry: Object) throws -> UInt64 {
        let text = try fmt.compact(try ev.prefetchedField(field, of: entry) ?? ev.evaluate(field: field, of: entry))
        guard let v = UInt64(text) else { throw FixtureError("\(field) is \(text), not a number") }
        return v
    }

    /// The interfaces of this network namespace as the kernel reports them over netlink (if_nameindex).
    func interfaces() throws -> [UInt64: String] {
        guard let list = if_nameindex() else { throw FixtureError("if_nameindex: errno \(errno)") }
        defer { if_freenameindex(list) }
        var out: [UInt64: String] = [:]
        var p = list
        while p.pointee.if_index != 0 {
            out[UInt64(p.pointee.if_index)] = String(cString: p.pointee.if_name)
            p += 1
        }
        return out
    }

    /// The network devices of this thread's namespace hashed by ifindex (`net->dev_index_head`, NETDEV_HASHENTRIES
    /// = 256 hlist heads, linked through `net_device.index_hlist`): hash_for_each gives each device once, in
    /// bucket `ifindex & 255` (dev_index_hash), with the name and index if_nameindex reports.
    func testHashForEachOfNetDevicesMatchesIfNameIndex() throws {
        let (ev, fmt) = try liveEvaluator()
        guard try memberType(ev, "net", "dev_index_head") != nil, try memberType(ev, "net_device", "index_hlist") != nil else {
            throw XCTSkip(Host.skipReason("this kernel's struct net has no dev_index_head hash of net_device.index_hlist"))
        }
        let walk = "hash_for_each(struct net_device, current->nsproxy->net_ns->dev_index_head, index_hlist, 256)"
        // A device may come or go meanwhile on a busy host: the kernel's view before and after must agree.
        var attempt = 0
        while true {
            attempt += 1
            let before = try interfaces()
            let entries = try walkEntries(ev, walk)
            let after = try interfaces()
            guard before == after else {
                if attempt < 5 { continue }
                throw FixtureError("the interfaces kept changing")
            }
            var walked: [UInt64: String] = [:]
            for e in entries {
                let index = try number(ev, fmt, "ifindex", of: e)
                XCTAssertEqual(e.index, index & 255, "device \(index) sits in bucket ifindex & 255")
                walked[index] = try fmt.compact(try ev.evaluate(field: "name", of: e))
            }
            XCTAssertEqual(entries.count, walked.count, "each device once")
            XCTAssertEqual(walked, before.mapValues { "\"\($0)\"" })
            break
        }
        XCTAssertThrowsError(try ev.evaluate("hash_for_each(struct net_device, current->nsproxy->net_ns->dev_index_head, index_hlist)")) {
            XCTAssertTrue("\($0)".contains("hash_for_each over one head needs the bucket count"), "\($0)")
        }
        XCTAssertThrowsError(try ev.evaluate("hash_for_each(struct net_device, current->nsproxy->net_ns, index_hlist, 4)")) {
            XCTAssertTrue("\($0)".contains("hash_for_each needs a struct hlist_head or struct hlist_nulls_head"), "\($0)")
        }
    }

    /// The array form: `struct pid.tasks` is an array of PIDTYPE_MAX hlist heads; its first bucket (PIDTYPE_PID,
    /// BUCKETS 1, linked through pid_links[0]) holds this thread alone, the TID /proc/thread-self names. BUCKETS
    /// past the array's length is an error.
    func testHashForEachOverAnArrayOfHeads() throws {
        let (ev, fmt) = try liveEvaluator()
        let entries = try walkEntries(ev, "hash_for_each(struct task_struct, current->thread_pid->tasks, pid_links[0], 1)")
        let tid = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self").split(separator: "/").last.map(String.init)
        XCTAssertEqual(try entries.map { try fmt.compact(try ev.evaluate(field: "pid", of: $0)) }, [tid ?? ""])
        XCTAssertEqual(entries.map(\.index), [0])
        guard case .array(_, let types) = try ev.evaluate("current->thread_pid->tasks").objectValue().type.resolved() else { throw FixtureError("tasks is no array") }
        XCTAssertThrowsError(try ev.evaluate("hash_for_each(struct task_struct, current->thread_pid->tasks, pid_links[0], \(types + 1))")) {
            XCTAssertTrue("\($0)".contains("hash_for_each: BUCKETS \(types + 1) is past the \(types) heads"), "\($0)")
        }
    }

    /// A loopback listener and three connections: six established sockets in this namespace's TCP ehash
    /// (`net->ipv4.tcp_death_row.hashinfo`: `ehash_mask + 1` buckets of `struct inet_ehash_bucket`, whose `chain` is
    /// an hlist_nulls of `sock_common.skc_nulls_node`). hash_for_each over them finds exactly those six (by the
    /// listener's port) with the ports getsockname/getpeername give, state TCP_ESTABLISHED; every socket it walks
    /// is one /proc/net/tcp{,6} lists. The same entries in the kernel (BPF, nulls end test, fields copied) and
    /// from kreach; --max cuts.
    func testHashForEachOfTCPEhashFindsOurLoopbackConnections() throws {
        let (ev, fmt) = try liveEvaluator()
        guard let row = try memberType(ev, "netns_ipv4", "tcp_death_row"), try memberType(ev, "inet_timewait_death_row", "hashinfo") != nil,
              try memberType(ev, "sock_common", "skc_nulls_node") != nil else {
            throw XCTSkip(Host.skipReason("this kernel's TCP ehash is not reachable from struct net (no netns_ipv4.tcp_death_row.hashinfo)"))
        }
        var isPointer = false
        if case .pointer = try row.resolved() { isPointer = true }
        let hashinfo = "current->nsproxy->net_ns->ipv4.tcp_death_row\(isPointer ? "->" : ".")hashinfo"
        let mask = try UInt64(fmt.compact(try ev.evaluate("\(hashinfo)->ehash_mask").objectValue())) ?? 0
        XCTAssertGreaterThan(mask, 0)

        func sockaddrPort(_ fd: Int32, peer: Bool) throws -> UInt16 {
            var a = sockaddr_in()
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let r = withUnsafeMutablePointer(to: &a) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { peer ? getpeername(fd, $0, &length) : getsockname(fd, $0, &length) }
            }
            guard r == 0 else { throw FixtureError("get\(peer ? "peer" : "sock")name: errno \(errno)") }
            return UInt16(bigEndian: a.sin_port)
        }
        func loopback(_ port: UInt16) -> sockaddr_in {
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
            a.sin_port = port.bigEndian
            return a
        }
        var fds: [Int32] = []
        defer { fds.forEach { close($0) } }
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard listener >= 0 else { throw FixtureError("socket: errno \(errno)") }
        fds.append(listener)
        var any = loopback(0)
        let bound = withUnsafePointer(to: &any) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(listener, 8) == 0 else { throw XCTSkip(Host.skipReason("cannot listen on 127.0.0.1 (errno \(errno)): no loopback")) }
        let port = try sockaddrPort(listener, peer: false)
        var expected = Set<[UInt16]>()
        for _ in 0..<3 {
            let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard client >= 0 else { throw FixtureError("socket: errno \(errno)") }
            fds.append(client)
            var to = loopback(port)
            let r = withUnsafePointer(to: &to) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            guard r == 0 else { throw FixtureError("connect: errno \(errno)") }
            let server = accept(listener, nil, nil)
            guard server >= 0 else { throw FixtureError("accept: errno \(errno)") }
            fds.append(server)
            for fd in [client, server] { expected.insert([try sockaddrPort(fd, peer: false), try sockaddrPort(fd, peer: true)]) }
        }
        XCTAssertEqual(expected.count, 6)

        /// (local port, remote port) of every non-listening socket /proc/net/tcp{,6} lists, and of ours (by state).
        func procSockets() -> (all: Set<[UInt16]>, established: Set<[UInt16]>) {
            var all = Set<[UInt16]>(), established = Set<[UInt16]>()
            for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
                guard let text = try? FileBytes.readText(file) else { continue }
                for line in text.split(separator: "\n").dropFirst() {
                    let f = line.split(separator: " ")
                    guard f.count > 3, f[3] != "0A", let l = f[1].split(separator: ":").last.flatMap({ UInt16($0, radix: 16) }),
                          let r = f[2].split(separator: ":").last.flatMap({ UInt16($0, radix: 16) }) else { continue }
                    all.insert([l, r])
                    if f[3] == "01" { established.insert([l, r]) }
                }
            }
            return (all, established)
        }
        let walk = "hash_for_each(struct sock_common, (struct hlist_nulls_head *)\(hashinfo)->ehash, skc_nulls_node, \(mask + 1))"
        func walked(_ mode: WalkMode) throws -> (ours: Set<[UInt16]>, all: Set<[UInt16]>, entries: [Object]) {
            ev.walkMode = mode
            ev.walkFields = ["skc_num", "skc_dport", "skc_state"]
            defer { ev.walkMode = .auto; ev.walkFields = [] }
            let entries = try walkEntries(ev, walk)
            var ours = Set<[UInt16]>(), all = Set<[UInt16]>()
            for e in entries {
                let local = UInt16(try number(ev, fmt, "skc_num", of: e))
                let remote = UInt16(try number(ev, fmt, "skc_dport", of: e)).byteSwapped  // __be16
                all.insert([local, remote])
                if local == port || remote == port {
                    ours.insert([local, remote])
                    XCTAssertEqual(try number(ev, fmt, "skc_state", of: e), 1, "TCP_ESTABLISHED")
                    XCTAssertLessThanOrEqual(e.index ?? .max, mask, "a bucket of the table")
                }
            }
            return (ours, all, entries)
        }
        let before = procSockets()
        let user = try walked(.user)
        XCTAssertNil(ev.prefetchedField("skc_num", of: user.entries[0]), "walked by kreach: nothing copied")
        let kernel = try walked(.kernel)
        XCTAssertNotNil(ev.prefetchedField("skc_num", of: kernel.entries[0]), "walked in the kernel: the fields came along")
        let after = procSockets()
        XCTAssertEqual(user.ours, expected)
        XCTAssertEqual(kernel.ours, expected)
        XCTAssertTrue(expected.isSubset(of: before.established), "/proc/net/tcp lists our connections as established")
        let listed = before.all.union(after.all)
        for s in user.all.union(kernel.all) { XCTAssertTrue(listed.contains(s), "walked socket \(s), which /proc/net/tcp doesn't list") }
        ev.maxEntries = 1
        XCTAssertEqual(try walkEntries(ev, walk).count, 1)
        XCTAssertTrue(ev.warnings.contains("hash_for_each: stopped after 1 entries (--max)"), "\(ev.warnings)")
    }

    /// for_each_set_bit over this thread's blocked signals (`task_struct.blocked`, a sigset_t; BPF_PROG_TEST_RUN
    /// runs as this thread) after blocking four of them: the bits /proc/thread-self/status lists as SigBlk
    /// (signal n is bit n - 1), through the struct, its `sig` array and an `unsigned long *`; NBITS cuts; more bits
    /// than the object has is an error.
    func testForEachSetBitOfBlockedSignalsMatchesSigBlk() throws {
        let (ev, fmt) = try liveEvaluator()
        func sigBlk() throws -> [UInt64] {
            let status = try FileBytes.readText("/proc/thread-self/status")
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("SigBlk:") }),
                  let mask = UInt64(line.dropFirst("SigBlk:".count).trimmingCharacters(in: .whitespaces), radix: 16) else { throw FixtureError("no SigBlk") }
            return (0..<64).filter { mask & (1 << $0) != 0 }
        }
        func walked(_ source: String) throws -> [UInt64] {
            try walkEntries(ev, source).map { UInt64(try fmt.compact($0)) ?? .max }
        }
        var set = sigset_t(), saved = sigset_t()
        sigemptyset(&set)
        for s in [SIGUSR1, SIGUSR2, SIGWINCH, 40] { sigaddset(&set, s) }
        XCTAssertEqual(pthread_sigmask(SIG_BLOCK, &set, &saved), 0)
        defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
        let blocked = try sigBlk()
        XCTAssertTrue(Set([UInt64(SIGUSR1 - 1), UInt64(SIGUSR2 - 1), UInt64(SIGWINCH - 1), 39]).isSubset(of: Set(blocked)), "\(blocked)")
        XCTAssertEqual(try walked("for_each_set_bit(current->blocked, 64)"), blocked)
        XCTAssertEqual(try walked("for_each_set_bit(current->blocked.sig, 64)"), blocked)
        XCTAssertEqual(try walked("for_each_set_bit((unsigned long *)&current->blocked, 64)"), blocked)
        XCTAssertEqual(try walked("for_each_set_bit(&current->blocked, \(SIGUSR2))"), blocked.filter { $0 < SIGUSR2 })
        XCTAssertThrowsError(try ev.evaluate("for_each_set_bit(current->blocked, 65)")) {
            XCTAssertTrue("\($0)".contains("for_each_set_bit: NBITS 65 is past the 64 bits of sigset_t"), "\($0)")
        }
        XCTAssertThrowsError(try ev.evaluate("for_each_set_bit(5, 3)")) {
            XCTAssertTrue("\($0)".contains("for_each_set_bit: the bitmap has no address"), "\($0)")
        }
    }
}
