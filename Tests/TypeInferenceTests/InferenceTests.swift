import BTF
import KernelSymbols
import KernelSource
import KreachSupport
import KreachTestSupport
import TypeInference
import XCTest

/// Type inference on the Debian 6.1 capture with its own kernel image, checked against the DWARF of the
/// same build (Benchmarks/types/dwarf-table.py's table, vendored next to the capture).
final class InferenceTests: XCTestCase {
    nonisolated(unsafe) static var shared: (TypeInferrer, BTF, OracleTable)?

    func inferrer() throws -> (TypeInferrer, BTF, OracleTable) {
        if let s = InferenceTests.shared { return s }
        let kernel = try Kernel(source: .snapshot(try DebianCapture.directory()))
        let btf = try kernel.types().vmlinux
        let inferrer = try TypeInferrer(image: try DebianImage.image(), kallsyms: try kernel.symbols().kallsyms, btf: btf)
        let text = try ByteBuffer.readDecompressing(DebianImage.table, limit: FileLimit("oracle table", bytes: 256 << 20))
        let oracle = try OracleTable(text: String(decoding: text.bytes, as: UTF8.self))
        InferenceTests.shared = (inferrer, btf, oracle)
        return (inferrer, btf, oracle)
    }

    /// The globals `kreach show` needs typed without casts, each as DWARF says.
    func testTheNamespaceRootsAreTypedAsDWARFSays() throws {
        let (inferrer, btf, oracle) = try inferrer()
        for name in ["init_task", "init_uts_ns", "init_nsproxy", "init_pid_ns", "init_net", "init_mm", "pid_max"] {
            let symbol = try inferrer.dataSymbol(named: name)
            let row = try XCTUnwrap(oracle.row(address: symbol.address &- inferrer.slide, name: name), "\(name) is not in the oracle")
            let result = inferrer.infer(symbol)
            let type = try XCTUnwrap(result.type, "\(name): \(result.note)")
            XCTAssertEqual(InferenceScore.resolvedName(btf, type), row.resolvedName, name)
            XCTAssert(result.note.hasPrefix("type inferred from"), result.note)
        }
    }

    /// Ops tables, attributes and event classes that no code types (the code reaches them through
    /// pointers): typed by the functions their initial data holds, as DWARF says.
    func testFunctionsInInitialDataTypeOpsTablesAsDWARFSays() throws {
        let (inferrer, btf, oracle) = try inferrer()
        for name in ["aa_fs_profile_load", "arp_seq_ops", "atkbd_attr_extra", "event_class_sched_switch", "param_ops_bool"] {
            let symbol = try inferrer.dataSymbol(named: name)
            let row = try XCTUnwrap(oracle.row(address: symbol.address &- inferrer.slide, name: name), "\(name) is not in the oracle")
            let result = inferrer.infer(symbol)
            let type = try XCTUnwrap(result.type, "\(name): \(result.note)")
            XCTAssertEqual(InferenceScore.resolvedName(btf, type), row.resolvedName, name)
            XCTAssert(result.note.contains("in its initial data"), "\(name): \(result.note)")
        }
    }

    /// Static functions of one name with different prototypes (`state_show` of a kobj_attribute and of
    /// several device_attributes): their addresses alone don't say which struct holds them, so none of
    /// the `dev_attr_state`s is typed as anything but a device_attribute (or its attribute); an empty `LIST_HEAD` read only
    /// by 8-byte loads is a list_head, not an integer.
    func testAmbiguousFunctionNamesAndEmptyListsAreNotMistyped() throws {
        let (inferrer, btf, oracle) = try inferrer()
        let states = inferrer.dataSymbols().filter { $0.name == "dev_attr_state" }
        XCTAssertGreaterThan(states.count, 1)
        for s in states {
            guard let t = inferrer.infer(s).type else { continue }
            // The struct attribute inside it when code passes that: never another struct.
            XCTAssert(["struct device_attribute", "struct attribute"].contains(InferenceScore.resolvedName(btf, t)), InferenceScore.resolvedName(btf, t))
        }
        for name in ["ftrace_event_list", "hpet_map"] {
            let symbol = try inferrer.dataSymbol(named: name)
            let row = try XCTUnwrap(oracle.row(address: symbol.address &- inferrer.slide, name: name))
            let result = inferrer.infer(symbol)
            XCTAssertEqual(result.type.map { InferenceScore.resolvedName(btf, $0) }, row.resolvedName, "\(name): \(result.note)")
        }
    }

    /// Every global at once, scored against DWARF: floors just under today's numbers (struct/union 99.1%
    /// layout-compatible, 96.9% exact name at 57.5% recall; integer width 100% at 89.3%), the issue's
    /// goals being 99%, 95% and 55%.
    func testPrecisionAndRecallAgainstDWARF() throws {
        let (inferrer, btf, oracle) = try inferrer()
        let results = inferrer.inferAll()
        let score = InferenceScore(results: results, all: inferrer.dataSymbols(), oracle: oracle, btf: btf, slide: inferrer.slide)
        print(score)
        let structs = try XCTUnwrap(score.lines["struct/union"])
        XCTAssertGreaterThanOrEqual(structs.compatiblePrecision, InferenceTests.floors.structCompatible)
        XCTAssertGreaterThanOrEqual(structs.exactPrecision, InferenceTests.floors.structExact)
        XCTAssertGreaterThanOrEqual(structs.recall, InferenceTests.floors.structRecall)
        let integers = try XCTUnwrap(score.lines["integer"])
        XCTAssertGreaterThanOrEqual(integers.widthPrecision, InferenceTests.floors.integerWidth)
        XCTAssertGreaterThanOrEqual(integers.recall, InferenceTests.floors.integerRecall)
    }

    static let floors = (structCompatible: 0.99, structExact: 0.96, structRecall: 0.57, integerWidth: 0.99, integerRecall: 0.85)

    /// kallsyms of another build than the image: refused, not silently mistyped.
    func testAnImageOfAnotherKernelIsRefused() throws {
        let (_, btf, _) = try inferrer()
        let kernel = try Kernel(source: .snapshot(try DebianCapture.directory()))
        // Every function 16 bytes later than it is, the image's placement (_text) unchanged.
        let text = String(decoding: try kernel.bytes(.kallsyms), as: UTF8.self).split(separator: "\n").map { line -> String in
            let f = line.split(separator: " ")
            guard f.count >= 3, f[1] == "T" || f[1] == "t", f[2] != "_text", let a = UInt64(f[0], radix: 16) else { return String(line) }
            return ([String(a + 16, radix: 16)] + f.dropFirst().map(String.init)).joined(separator: " ")
        }.joined(separator: "\n") + "\n"
        let kallsyms = try Kallsyms(buffer: ByteBuffer(Array(text.utf8)), source: "kallsyms")
        XCTAssertThrowsError(try TypeInferrer(image: try DebianImage.image(), kallsyms: kallsyms, btf: btf)) { error in
            XCTAssert("\(error)".contains("is not the running kernel's image"), "\(error)")
        }
    }
}
