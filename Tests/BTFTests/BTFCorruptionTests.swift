import XCTest
@testable import BTF
import KreachSupport
import KreachTestSupport

/// Truncated and corrupted copies of real BTF (the Debian capture): every one is a BTFError naming
/// what was wrong, never a crash or a hang.
final class BTFCorruptionTests: XCTestCase {
    nonisolated(unsafe) static var cached: (vmlinux: [UInt8], base: BTF, modules: [String: [UInt8]])?

    func real() throws -> (vmlinux: [UInt8], base: BTF, modules: [String: [UInt8]]) {
        if let cached = BTFCorruptionTests.cached { return cached }
        let dir = try DebianCapture.directory()
        let bytes = try FileBytes.read(dir + "/btf/vmlinux")
        let base = try BTF(buffer: ByteBuffer(bytes), name: "vmlinux")
        var modules: [String: [UInt8]] = [:]
        for m in ["brd", "dummy", "loop", "lockd"] { modules[m] = try FileBytes.read(dir + "/btf/" + m) }
        BTFCorruptionTests.cached = (bytes, base, modules)
        return (bytes, base, modules)
    }

    func parse(_ bytes: [UInt8], base: BTF? = nil) throws -> BTF {
        try BTF(buffer: ByteBuffer(bytes), name: base == nil ? "vmlinux" : "module", base: base)
    }

    func expectError(_ bytes: [UInt8], base: BTF? = nil, _ fragment: String, offset: Int? = nil,
                     file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try parse(bytes, base: base)
            XCTFail("parsed corrupted BTF without an error (expected: \(fragment))", file: file, line: line)
        } catch let e as BTFError {
            XCTAssertTrue(e.description.contains(fragment), "\(e)", file: file, line: line)
            if let offset { XCTAssertEqual(e.offset, offset, "\(e)", file: file, line: line) }
        } catch {
            XCTFail("wrong error type \(error)", file: file, line: line)
        }
    }

    func put32(_ bytes: inout [UInt8], _ at: Int, _ v: UInt32) {
        for k in 0..<4 { bytes[at + k] = UInt8(truncatingIfNeeded: v >> (8 * UInt32(k))) }
    }

    func get32(_ bytes: [UInt8], _ at: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + $1]) << (8 * UInt32($1)) }
    }

    func testHeaderCorruption() throws {
        let (bytes, _, _) = try real()
        expectError([], "too short for a BTF header", offset: 0)
        expectError(Array(bytes[0..<23]), "too short for a BTF header", offset: 0)
        var b = bytes; b[0] = 0x12; b[1] = 0x34
        expectError(b, "bad magic 0x3412", offset: 0)
        b = bytes; b[0] = 0xEB; b[1] = 0x9F
        expectError(b, "big-endian BTF is not supported", offset: 0)
        b = bytes; b[2] = 7
        expectError(b, "unsupported BTF version 7", offset: 2)
        b = bytes; put32(&b, 4, 0xFFFF_FFF0)
        expectError(b, "header length", offset: 4)
        b = bytes; put32(&b, 4, 12)
        expectError(b, "header length", offset: 4)
        b = bytes; put32(&b, 12, 0xFFFF_FFFF)  // type_len
        expectError(b, "type section", offset: 8)
        b = bytes; put32(&b, 16, 0xFFFF_FF00)  // str_off
        expectError(b, "string section", offset: 16)
        b = bytes; put32(&b, 8, 2)  // type_off unaligned
        expectError(b, "4-byte aligned", offset: 8)
        // A header longer than we know with non-zero unknown fields.
        b = bytes; put32(&b, 4, 40)
        b.insert(contentsOf: [UInt8](repeating: 1, count: 16), at: 24)
        expectError(b, "unknown non-zero fields", offset: 32)
    }

    func testStringSectionCorruption() throws {
        let (bytes, base, _) = try real()
        let strStart = 24 + Int(get32(bytes, 16))
        var b = bytes; b[strStart] = 65
        expectError(b, "must start with an empty string", offset: strStart)
        b = bytes; b[b.count - 1] = 65
        expectError(b, "not NUL-terminated", offset: b.count - 1)
        // A name offset past the strings: parsing succeeds, decoding that type names the byte offset.
        b = bytes
        let id = try XCTUnwrap(base.lookup("list_head").first)
        let record = try XCTUnwrap(base.recordOffset(id))
        put32(&b, record, 0x7FFF_FFF0)
        let btf = try parse(b)
        XCTAssertThrowsError(try btf.type(id)) { e in
            XCTAssertEqual((e as? BTFError)?.offset, record)
            XCTAssertTrue("\(e)".contains("string offset 2147483632 is outside the string section"), "\(e)")
        }
        XCTAssertThrowsError(try btf.validateAll())
        // A member's name offset past the strings: the direct member search reports it the same way.
        b = bytes
        put32(&b, record + 12, 0x7FFF_FFF0)
        XCTAssertThrowsError(try parse(b).directMember(named: "prev", of: id)) { e in
            XCTAssertEqual((e as? BTFError)?.offset, record + 12)
            XCTAssertTrue("\(e)".contains("string offset 2147483632 is outside the string section"), "\(e)")
        }
    }

    func testTypeRecordCorruption() throws {
        let (bytes, base, _) = try real()
        let task = try XCTUnwrap(base.lookup("task_struct").first { try base.kind(of: $0) == .structure })
        let record = try XCTUnwrap(base.recordOffset(task))
        // vlen far beyond the bytes left.
        var b = bytes
        put32(&b, record + 4, (4 << 24) | 0x00FF_FFFF)
        expectError(b, "needs 201326580 more bytes", offset: record)
        // An unknown kind with no layout section to skip it.
        b = bytes
        put32(&b, record + 4, (UInt32(100) << 24) | 3)
        expectError(b, "unknown kind 100", offset: record + 4)
        // A member referring to a type id that doesn't exist: decoding names the member's bytes.
        b = bytes
        put32(&b, record + 12 + 4, 0x00FF_0000)
        let broken = try parse(b)
        XCTAssertThrowsError(try broken.type(task)) { e in
            XCTAssertTrue("\(e)".contains("member 0 of struct \(task) refers to type id 16711680"), "\(e)")
            XCTAssertEqual((e as? BTFError)?.offset, record + 16)
        }
        let first = try base.type(task).members[0].name
        XCTAssertThrowsError(try broken.directMember(named: first, of: task)) { e in
            XCTAssertTrue("\(e)".contains("member 0 of struct \(task) refers to type id 16711680"), "\(e)")
            XCTAssertEqual((e as? BTFError)?.offset, record + 16)
        }
        // Truncated inside the type section: the declared lengths no longer fit.
        expectError(Array(bytes[0..<(record + 5)]), "type section")
    }

    func testTypedefLoopIsAnErrorNotAHang() throws {
        let (bytes, base, _) = try real()
        let pid = try XCTUnwrap(base.lookup("pid_t").first)
        let record = try XCTUnwrap(base.recordOffset(pid))
        var b = bytes
        put32(&b, record + 8, pid)  // typedef pid_t pid_t
        let btf = try parse(b)
        XCTAssertThrowsError(try btf.resolve(pid)) { XCTAssertTrue("\($0)".contains("a loop?"), "\($0)") }
        XCTAssertThrowsError(try btf.size(of: pid)) { XCTAssertTrue("\($0)".contains("a loop?"), "\($0)") }
        XCTAssertThrowsError(try btf.renderC(pid)) { XCTAssertTrue("\($0)".contains("a loop?"), "\($0)") }
        // A pointer to itself renders (it's legal C-wise to stop at the pointer) or errors, but terminates.
        let ptr = try XCTUnwrap(base.localIDs.first { try base.kind(of: $0) == .pointer })
        var c = bytes
        put32(&c, try XCTUnwrap(base.recordOffset(ptr)) + 8, ptr)
        XCTAssertThrowsError(try parse(c).cDeclaration(ptr, "p")) { XCTAssertTrue("\($0)".contains("nests deeper"), "\($0)") }
    }

    func testTruncationAtManyPointsNeverCrashes() throws {
        let (bytes, _, modules) = try real()
        var cuts = Array(stride(from: 0, to: 64, by: 1))
        cuts += stride(from: 64, to: bytes.count, by: bytes.count / 97).map { $0 }
        for cut in cuts {
            XCTAssertThrowsError(try parse(Array(bytes[0..<cut])), "cut at \(cut)")
        }
        let base = try parse(bytes)
        let brd = try XCTUnwrap(modules["brd"])
        for cut in 0..<brd.count where cut % 7 == 0 || cut < 40 {
            XCTAssertThrowsError(try parse(Array(brd[0..<cut]), base: base), "brd cut at \(cut)")
        }
    }

    /// Seeded random byte flips in real module BTF: parse, then decode, render and size every type.
    func testRandomFlipsInModuleBTF() throws {
        let (bytes, _, modules) = try real()
        let base = try parse(bytes)
        var rng = SplitMix(seed: 0x6b72_6561_6368)
        var parsed = 0, rejected = 0, decodeErrors = 0
        for name in ["dummy", "brd", "loop"] {
            let original = try XCTUnwrap(modules[name])
            for _ in 0..<(name == "loop" ? 60 : 250) {
                var b = original
                for _ in 0..<(1 + Int(rng.next() % 6)) {
                    b[Int(rng.next() % UInt64(b.count))] = UInt8(truncatingIfNeeded: rng.next())
                }
                guard let btf = try? parse(b, base: base) else { rejected += 1; continue }
                parsed += 1
                for id in btf.localIDs {
                    do {
                        _ = try btf.type(id)
                        _ = try btf.renderC(id)
                        _ = try btf.json(id)
                        _ = try? btf.size(of: id)
                        _ = try btf.resolve(id)
                    } catch {
                        decodeErrors += 1
                    }
                }
                _ = btf.lookup("brd_devices")
            }
        }
        XCTAssertGreaterThan(parsed, 50)
        XCTAssertGreaterThan(rejected, 50)
        XCTAssertGreaterThan(decodeErrors, 10)
    }

    /// The newer 32-byte header: a layout section lets a reader skip kinds it doesn't know.
    func testLayoutSectionSkipsUnknownKinds() throws {
        let (bytes, base, _) = try real()
        let hdrLen = Int(get32(bytes, 4))
        let typeOff = Int(get32(bytes, 8)), typeLen = Int(get32(bytes, 12))
        let strOff = Int(get32(bytes, 16)), strLen = Int(get32(bytes, 20))
        let types = Array(bytes[(hdrLen + typeOff)..<(hdrLen + typeOff + typeLen)])
        let strings = Array(bytes[(hdrLen + strOff)..<(hdrLen + strOff + strLen)])
        // One record of kind 25 with vlen 2: 4 bytes of info, 8 bytes per element (the layout says so).
        var unknown = [UInt8](repeating: 0, count: 12 + 4 + 16)
        put32(&unknown, 4, (25 << 24) | 2)
        var layout = [UInt8](repeating: 0, count: 26 * 4)
        layout[25 * 4] = 4
        layout[25 * 4 + 1] = 8
        func build(withLayout: Bool) -> [UInt8] {
            var header = [UInt8](repeating: 0, count: 32)
            header[0] = 0x9F; header[1] = 0xEB; header[2] = 1
            put32(&header, 4, 32)
            let newTypes = types + unknown
            put32(&header, 8, 0); put32(&header, 12, UInt32(newTypes.count))
            put32(&header, 16, UInt32(newTypes.count)); put32(&header, 20, UInt32(strings.count))
            put32(&header, 24, withLayout ? UInt32(newTypes.count + strings.count) : 0)
            put32(&header, 28, withLayout ? UInt32(layout.count) : 0)
            return header + newTypes + strings + (withLayout ? layout : [])
        }
        let btf = try parse(build(withLayout: true))
        XCTAssertEqual(btf.headerLength, 32)
        XCTAssertEqual(btf.localCount, base.localCount + 1)
        let last = btf.endID - 1
        XCTAssertEqual(try btf.type(last).rawKind, 25)
        XCTAssertEqual(try btf.kind(of: last), .unknown)
        // Everything before it still decodes the same.
        XCTAssertEqual(try btf.renderC(try XCTUnwrap(btf.lookup("list_head").first)), try base.renderC(try XCTUnwrap(base.lookup("list_head").first)))
        expectError(build(withLayout: false), "unknown kind 25 (no layout section describes it)")
    }

    /// vlen is 24 bits wide in the newer UAPI: an enum with 70,000 enumerators parses.
    func testWideVlen() throws {
        let (bytes, _, _) = try real()
        let hdrLen = Int(get32(bytes, 4))
        let typeLen = Int(get32(bytes, 12)), strOff = Int(get32(bytes, 16))
        let count = 70_000
        var record = [UInt8](repeating: 0, count: 12 + 8 * count)
        put32(&record, 4, (6 << 24) | UInt32(count))
        put32(&record, 8, 4)
        for k in 0..<count { put32(&record, 12 + 8 * k + 4, UInt32(k)) }
        var b = bytes
        b.insert(contentsOf: record, at: hdrLen + typeLen)
        put32(&b, 12, UInt32(typeLen + record.count))
        put32(&b, 16, UInt32(strOff + record.count))
        let btf = try parse(b)
        let t = try btf.type(btf.endID - 1)
        XCTAssertEqual(t.kind, .enumeration)
        XCTAssertEqual(t.enumerators.count, count)
        XCTAssertEqual(t.enumerators.last?.bits, UInt64(count - 1))
    }
}

/// A small deterministic generator for reproducible corruption.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
