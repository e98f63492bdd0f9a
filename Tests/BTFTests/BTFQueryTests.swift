import XCTest
@testable import BTF
import KreachSupport
import KreachTestSupport

/// Name lookups, alias resolution, sizes and C rendering on the Debian capture's real BTF.
final class BTFQueryTests: XCTestCase {
    nonisolated(unsafe) static var cached: (BTF, BTF)?

    func objects() throws -> (vmlinux: BTF, lockd: BTF) {
        if let cached = BTFQueryTests.cached { return cached }
        let dir = try DebianCapture.directory()
        let vmlinux = try BTF(path: dir + "/btf/vmlinux", name: "vmlinux")
        let lockd = try BTF(path: dir + "/btf/lockd", name: "lockd", base: vmlinux)
        BTFQueryTests.cached = (vmlinux, lockd)
        return (vmlinux, lockd)
    }

    func one(_ btf: BTF, _ name: String, _ kind: BTFKind) throws -> TypeID {
        let ids = try btf.lookup(name).filter { try btf.kind(of: $0) == kind }
        XCTAssertEqual(ids.count, 1, "\(kind.label) \(name): \(ids)")
        return try XCTUnwrap(ids.first)
    }

    func testLookupFindsEveryNamedTypeItsNameLeadsTo() throws {
        let (vmlinux, lockd) = try objects()
        // Every 53rd type of vmlinux and every type of lockd: lookup(name) must contain the id.
        for btf in [vmlinux, lockd] {
            var checked = 0
            for id in stride(from: btf.firstID, to: btf.endID, by: btf === vmlinux ? 53 : 1) {
                let name = try btf.name(of: id)
                if name.isEmpty { continue }
                XCTAssertTrue(btf.lookup(name).contains(id), "\(btf.objectName) lookup(\(name)) misses \(id)")
                checked += 1
            }
            XCTAssertGreaterThan(checked, 100)
        }
        XCTAssertEqual(vmlinux.lookup("no_such_type_in_any_kernel"), [])
        XCTAssertEqual(vmlinux.lookup(""), [])
        // A suffix of a real name is not that name.
        XCTAssertTrue(try vmlinux.lookup("ask_struct").allSatisfy { try vmlinux.name(of: $0) == "ask_struct" })
    }

    func testDirectMemberAgreesWithDecodedMembers() throws {
        let (vmlinux, lockd) = try objects()
        // Every struct and union of lockd (member names in the base's strings and its own) and every 29th
        // of vmlinux: each member name finds the first member so named, with its type and offsets.
        for btf in [vmlinux, lockd] {
            var checked = 0
            for id in stride(from: btf.firstID, to: btf.endID, by: btf === vmlinux ? 29 : 1) {
                let kind = try btf.kind(of: id)
                guard kind == .structure || kind == .union else {
                    XCTAssertNil(try btf.directMember(named: "next", of: id), "\(kind.label) \(id) has no members")
                    continue
                }
                let members = try btf.type(id).members
                for m in members {
                    let first = try XCTUnwrap(members.first { $0.name == m.name })
                    XCTAssertEqual(try btf.directMember(named: m.name, of: id), first, "\(btf.objectName) \(id).\(m.name)")
                    checked += 1
                }
                if let name = members.first(where: { $0.name.count > 1 })?.name {
                    // A prefix or an extension of a member's name is not that member.
                    for other in [String(name.dropLast()), name + "x"] {
                        XCTAssertEqual(try btf.directMember(named: other, of: id), members.first { $0.name == other }, "\(id).\(other)")
                    }
                }
            }
            XCTAssertGreaterThan(checked, 100)
        }
        let nlmFile = try one(lockd, "nlm_file", .structure)
        XCTAssertEqual(try lockd.directMember(named: "f_count", of: nlmFile)?.bitOffset, 196 * 8)
        XCTAssertNil(try lockd.directMember(named: "no_such_member", of: nlmFile))
        XCTAssertNil(try lockd.directMember(named: "f_count\0", of: nlmFile), "a NUL in the name never matches")
    }

    func testSplitBTFKeepsModuleTypesApartFromBase() throws {
        let (vmlinux, lockd) = try objects()
        XCTAssertEqual(lockd.firstID, 100_751)
        let nlmFile = try one(lockd, "nlm_file", .structure)
        XCTAssertEqual(nlmFile, 100_800)
        XCTAssertEqual(vmlinux.lookup("nlm_file"), [], "nlm_file is lockd's, not vmlinux's")
        XCTAssertTrue(lockd.owner(of: nlmFile) === lockd)
        let t = try lockd.type(nlmFile)
        XCTAssertEqual(t.size, 232)
        XCTAssertEqual(t.members.map(\.name), ["f_list", "f_handle", "f_file", "f_shares", "f_blocks", "f_locks", "f_count", "f_mutex"])
        XCTAssertEqual(t.members.map { $0.bitOffset / 8 }, [0, 16, 152, 168, 176, 192, 196, 200])
        // f_list is struct hlist_node from the base: the id resolves through vmlinux.
        XCTAssertTrue(lockd.owner(of: t.members[0].type) === vmlinux)
        XCTAssertEqual(lockd.describe(t.members[0].type), "struct hlist_node")
        XCTAssertEqual(lockd.describe(t.members[2].type), "struct file *[2]")
    }

    func testCRenderingLooksLikePahole() throws {
        let (vmlinux, lockd) = try objects()
        XCTAssertEqual(try vmlinux.renderC(try one(vmlinux, "list_head", .structure)), """
            struct list_head {
            \tstruct list_head *next;                         /*     0     8 */
            \tstruct list_head *prev;                         /*     8     8 */

            \t/* size: 16, cachelines: 1, members: 2 */
            };
            """)
        let nlm = try lockd.renderC(try one(lockd, "nlm_file", .structure))
        XCTAssertTrue(nlm.contains("struct file *f_file[2];"), nlm)
        XCTAssertTrue(nlm.contains("/* XXX 6 bytes hole, try to pack */"), nlm)
        XCTAssertTrue(nlm.contains("/* size: 232, cachelines: 4, members: 8 */"), nlm)
        XCTAssertEqual(try vmlinux.prototype(ofFunction: try one(vmlinux, "vfs_read", .function)),
                       "ssize_t vfs_read(struct file *file, char *buf, size_t count, loff_t *pos)")
        XCTAssertEqual(try lockd.prototype(ofFunction: try one(lockd, "nlm_lookup_file", .function)),
                       "__be32 nlm_lookup_file(struct svc_rqst *rqstp, struct nlm_file **result, struct nlm_lock *lock)")
    }

    func testDeclaratorsForPointersToFunctionsAndArraysAndConst() throws {
        let (vmlinux, _) = try objects()
        // struct file_operations has function-pointer members such as read.
        let fops = try vmlinux.type(try one(vmlinux, "file_operations", .structure))
        let read = try XCTUnwrap(fops.members.first { $0.name == "read" })
        XCTAssertEqual(try vmlinux.cDeclaration(read.type, read.name),
                       "ssize_t (*read)(struct file *, char *, size_t, loff_t *)")
        // printk takes a const char * and varargs.
        XCTAssertEqual(try vmlinux.prototype(ofFunction: try one(vmlinux, "_printk", .function)),
                       "int _printk(const char *fmt, ...)")
    }

    func testTypedefResolutionSizesAndAlignment() throws {
        let (vmlinux, _) = try objects()
        let pid = try one(vmlinux, "pid_t", .typedef)
        let resolved = try vmlinux.resolve(pid)
        XCTAssertEqual(try vmlinux.type(resolved).name, "int")
        XCTAssertEqual(try vmlinux.size(of: pid), 4)
        XCTAssertEqual(try vmlinux.alignment(of: pid), 4)
        let task = try one(vmlinux, "task_struct", .structure)
        XCTAssertEqual(try vmlinux.size(of: task), UInt64(try vmlinux.type(task).size))
        XCTAssertEqual(try vmlinux.alignment(of: try one(vmlinux, "list_head", .structure)), 8)
        XCTAssertEqual(vmlinux.pointerSize, 8)
        // A bitfield member carries its width (kind_flag encoding): struct sock's sk_userlocks is 4 bits.
        let sock = try vmlinux.type(try one(vmlinux, "sock", .structure))
        let bitfields = sock.members.filter { $0.bitfieldSize > 0 }
        XCTAssertTrue(sock.kindFlag)
        XCTAssertFalse(bitfields.isEmpty)
        XCTAssertTrue(try vmlinux.renderC(sock.id).contains(":\(bitfields[0].bitfieldSize);"))
    }

    func testJSONCarriesMembersAndObject() throws {
        let (_, lockd) = try objects()
        let json = try lockd.json(try one(lockd, "nlm_file", .structure)).compact
        XCTAssertTrue(json.hasPrefix(#"{"object":"lockd","id":100800,"kind":"struct","name":"nlm_file","size":232,"align":8,"members":[{"name":"f_list","type":"struct hlist_node""#), json)
        XCTAssertTrue(json.contains(#"{"name":"f_mutex","type":"struct mutex","type_id":331,"offset":200,"bit_offset":1600,"size":32}"#), json)
    }
}
