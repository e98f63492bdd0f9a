import XCTest
import KreachTestSupport

/// Expected addresses and offsets for expansions against the Debian 6.1 capture: from the capture's kallsyms
/// file and bpftool's raw BTF dump, never from kreach.
protocol CaptureOracle {}

extension CaptureOracle {
    /// The capture's kallsyms address of `module:name` (the `n`th of that name).
    func address(_ name: String, _ n: Int = 0) throws -> UInt64 {
        let all = try XCTUnwrap(ScriptExpressionTests.symbols[name], "\(name) not in the capture's kallsyms")
        return all[n]
    }

    /// The byte offset of `member` in `struct name`, from bpftool (and the bit offset within that byte).
    func offset(_ name: String, _ member: String, dump: BpftoolRawDump? = nil, kind: Substring = "STRUCT") throws -> UInt64 {
        let d = try XCTUnwrap(dump ?? ScriptExpressionTests.vmlinux)
        let id = try XCTUnwrap(d.named(name, kind: kind), "no \(kind) \(name)")
        let m = try XCTUnwrap(d.entries[id]?.members.first { $0.name == Substring(member) }, "no \(member) in \(name)")
        return UInt64(m.bitOffset / 8)
    }

    func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
}
