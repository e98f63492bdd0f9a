import XCTest
@testable import BTF
import KreachSupport
import KreachTestSupport

/// kreach's BTF reader against bpftool's raw dump of the same file: every type's kind, name, size and
/// referenced ids, every member's name, type, bit offset and bitfield size, every parameter and enumerator.
final class BTFOracleTests: XCTestCase {
    static let kindNames: [String: BTFKind] = [
        "INT": .int, "PTR": .pointer, "ARRAY": .array, "STRUCT": .structure, "UNION": .union, "ENUM": .enumeration,
        "FWD": .forward, "TYPEDEF": .typedef, "VOLATILE": .volatile, "CONST": .const, "RESTRICT": .restrict,
        "FUNC": .function, "FUNC_PROTO": .functionProto, "VAR": .variable, "DATASEC": .dataSection, "FLOAT": .float,
        "DECL_TAG": .declTag, "TYPE_TAG": .typeTag, "ENUM64": .enum64,
    ]

    func bpftool() throws -> String {
        guard Run.available("bpftool") else { throw FixtureError("bpftool is required for the BTF oracle tests (apt-get install bpftool)") }
        return "bpftool"
    }

    /// Compares every local type of `btf` with `bpftool btf dump file PATH format raw`.
    func compareWithBpftool(_ btf: BTF, path: String, base: String?) throws {
        var argv = [try bpftool()]
        if let base { argv += ["-B", base] }
        argv += ["btf", "dump", "file", path, "format", "raw"]
        let dump = try Run.command(argv)
        XCTAssertEqual(dump.status, 0, dump.stderr)
        var current: BTFType?
        var element = 0
        var checkedTypes = 0, checkedElements = 0, checkedIntEncodings = 0, checkedParameterNames = 0
        for line in dump.stdout.split(separator: "\n") {
            if line.hasPrefix("[") {
                if let t = current {
                    XCTAssertEqual(element, elementCount(t), "element count of type \(t.id)")
                }
                // [ID] KIND 'NAME' key=value...
                let close = try XCTUnwrap(line.firstIndex(of: "]"))
                let id = try XCTUnwrap(TypeID(line[line.index(after: line.startIndex)..<close]))
                let rest = line[line.index(close, offsetBy: 2)...]
                let kindWord = String(rest.prefix { $0 != " " })
                let t = try btf.type(id)
                XCTAssertEqual(t.kind, BTFOracleTests.kindNames[kindWord], "kind of \(id)")
                let quoted = try XCTUnwrap(rest.split(separator: "'", maxSplits: 2, omittingEmptySubsequences: false).dropFirst().first)
                XCTAssertEqual(t.name.isEmpty ? "(anon)" : t.name, String(quoted), "name of \(id)")
                let fields = keyValues(rest)
                if let size = fields["size"] { XCTAssertEqual(String(t.size), size, "size of \(id)") }
                if let target = fields["type_id"] {
                    XCTAssertEqual(String(t.kind == .array ? t.arrayElement : t.target), target, "type_id of \(id)")
                }
                if let index = fields["index_type_id"] { XCTAssertEqual(String(t.arrayIndex), index, "index of \(id)") }
                if let encoding = fields["encoding"] {
                    if t.kind == .int {
                        // btf_int_enc_str(): one of the BTF_INT_* flags, or (none).
                        let names: [UInt8: String] = [0: "(none)", 1: "SIGNED", 2: "CHAR", 4: "BOOL"]
                        XCTAssertEqual(names[t.intEncoding] ?? "UNKN", encoding, "encoding of int \(id)")
                        XCTAssertEqual(fields["bits_offset"], String(t.intOffset), "bit offset of int \(id)")
                        checkedIntEncodings += 1
                    } else {
                        XCTAssertEqual(t.isSigned ? "SIGNED" : "UNSIGNED", encoding, "signedness of \(id)")
                    }
                }
                if let ret = fields["ret_type_id"] { XCTAssertEqual(String(t.target), ret, "ret of \(id)") }
                if let vlen = fields["vlen"] { XCTAssertEqual(String(t.vlen), vlen, "vlen of \(id)") }
                if let bits = fields["nr_bits"] { XCTAssertEqual(String(t.intBits), bits, "bits of \(id)") }
                if let n = fields["nr_elems"] { XCTAssertEqual(String(t.arrayCount), n) }
                if let linkage = fields["linkage"] { XCTAssertEqual(t.linkage.label == "extern" ? "extern" : t.linkage.label, linkage, "linkage of \(id)") }
                current = t
                element = 0
                checkedTypes += 1
            } else if let t = current {
                // Member, parameter, enumerator or datasec entry lines begin with a tab.
                let fields = keyValues(line)
                switch t.kind {
                case .structure, .union:
                    let m = t.members[element]
                    XCTAssertEqual("'\(m.name.isEmpty ? "(anon)" : m.name)'", String(line.drop { $0 == "\t" }.prefix { $0 != " " }))
                    XCTAssertEqual(fields["type_id"], String(m.type), "member \(element) of \(t.id)")
                    XCTAssertEqual(fields["bits_offset"], String(m.bitOffset), "member \(element) of \(t.id)")
                    XCTAssertEqual(fields["bitfield_size"] ?? "0", String(m.bitfieldSize), "member \(element) of \(t.id)")
                case .functionProto:
                    let p = t.params[element]
                    XCTAssertEqual("'\(p.name.isEmpty ? "(anon)" : p.name)'", String(line.drop { $0 == "\t" }.prefix { $0 != " " }), "parameter \(element) of \(t.id)")
                    XCTAssertEqual(fields["type_id"], String(p.type), "parameter \(element) of \(t.id)")
                    if !p.name.isEmpty { checkedParameterNames += 1 }
                case .enumeration, .enum64:
                    let e = t.enumerators[element]
                    let value = t.isSigned ? String(Int64(bitPattern: e.bits)) : String(e.bits)
                    XCTAssertEqual("'\(e.name)'", String(line.drop { $0 == "\t" }.prefix { $0 != " " }), "enumerator \(element) of \(t.id)")
                    XCTAssertEqual(fields["val"], value, "enumerator \(e.name) of \(t.id)")
                case .dataSection:
                    XCTAssertEqual(fields["type_id"], String(t.sectionVariables[element].type))
                    XCTAssertEqual(fields["offset"], String(t.sectionVariables[element].offset))
                default:
                    break
                }
                element += 1
                checkedElements += 1
            }
        }
        XCTAssertEqual(checkedTypes, btf.localCount, "bpftool lists every type kreach parsed")
        XCTAssertGreaterThan(checkedElements, 0)
        if btf.objectName == "vmlinux" {
            XCTAssertGreaterThan(checkedIntEncodings, 10, "vmlinux's ints (SIGNED, BOOL, (none)...) were compared")
            XCTAssertGreaterThan(checkedParameterNames, 1000, "named parameters were compared")
        }
    }

    func elementCount(_ t: BTFType) -> Int {
        switch t.kind {
        case .structure, .union: return t.members.count
        case .functionProto: return t.params.count
        case .enumeration, .enum64: return t.enumerators.count
        case .dataSection: return t.sectionVariables.count
        default: return 0
        }
    }

    func keyValues(_ line: Substring) -> [String: String] {
        var result: [String: String] = [:]
        for word in line.split(whereSeparator: { $0 == " " || $0 == "\t" }) {
            guard let eq = word.firstIndex(of: "=") else { continue }
            var value = word[word.index(after: eq)...]
            while value.last == "," { value = value.dropLast() }
            if value.hasSuffix("ULL") { value = value.dropLast(3) } else if value.hasSuffix("LL") { value = value.dropLast(2) }
            result[String(word[..<eq])] = String(value)
        }
        return result
    }

    func testDebianVmlinuxMatchesBpftool() throws {
        let dir = try DebianCapture.directory()
        let btf = try BTF(path: dir + "/btf/vmlinux", name: "vmlinux")
        XCTAssertEqual(btf.localCount, 100_750)
        try compareWithBpftool(btf, path: dir + "/btf/vmlinux", base: nil)
    }

    func testDebianSplitModuleBTFMatchesBpftool() throws {
        let dir = try DebianCapture.directory()
        let vmlinux = try BTF(path: dir + "/btf/vmlinux", name: "vmlinux")
        for module in ["lockd", "brd", "loop", "nfsd"] {
            let btf = try BTF(path: dir + "/btf/" + module, name: module, base: vmlinux)
            XCTAssertEqual(btf.firstID, vmlinux.endID, "split BTF ids continue after the base's")
            try compareWithBpftool(btf, path: dir + "/btf/" + module, base: dir + "/btf/vmlinux")
        }
    }

    func testLiveKernelBTFMatchesBpftool() throws {
        let path = "/sys/kernel/btf/vmlinux"
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw XCTSkip(Host.skipReason("\(path) is not readable (kernel without CONFIG_DEBUG_INFO_BTF, or no permission)"))
        }
        let btf = try BTF(path: path, name: "vmlinux")
        try compareWithBpftool(btf, path: path, base: nil)
    }
}
