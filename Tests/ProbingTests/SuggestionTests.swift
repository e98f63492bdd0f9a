import Foundation
import XCTest
import KernelSource
import KernelSymbols
import KreachSupport
import KreachTestSupport
@testable import Probing

/// One rule maps a verdict to the probes kreach suggests: `why`'s "probe with" list, and every `where`
/// suggestion (vmlinux and module references alike) is its first entry. Before, a module reference suggested
/// `kprobe:` for a kprobe-only function (which bpftrace refuses) while a vmlinux reference didn't.
final class SuggestionTests: XCTestCase {
    /// For each verdict (traceable, kprobe-only), a vmlinux function and a module function of the capture with
    /// that verdict and a BTF FUNC of its own (found from the capture's own lists, not named by hand), turned
    /// into reference hits.
    func checkReferences(in dir: String, affReadable: Bool) throws {
        let kernel = try Kernel(source: .snapshot(dir))
        let why = WhyAnalyzer(kernel: kernel)
        let a = WhereAnalyzer(kernel: kernel, why: why)
        let k = try kernel.symbols().kallsyms
        XCTAssertEqual(why.lists.filterFunctions != nil, affReadable)
        // Without the list nothing is confirmed traceable.
        for verdict in affReadable ? [ProbeVerdict.traceable, .kprobeOnly] : [.kprobeOnly] {
            var shapes: [String: String] = [:]  // object kind -> suggestion with the name replaced by F
            for wantModule in [false, true] {
                let found = (0..<k.count).lazy.map(k.symbol).first { s in
                    s.isText && (s.module != nil) == wantModule && s.name == s.baseName && !s.name.hasPrefix("_")
                        && k.indexes(named: s.name).count == 1 && why.quickVerdict(s.name) == verdict
                        && !a.isGetter(s.name, module: s.moduleName) && a.hasBTFFunction(s.name, module: s.moduleName)
                }
                let s = try XCTUnwrap(found, "the capture has a \(wantModule ? "module" : "vmlinux") function that is \(verdict.rawValue)")
                let hit = a.referenceHit(function: s.name, object: s.moduleName, place: s.name + "+0x0", how: ".text")
                XCTAssertEqual(hit.kind, .reference)
                XCTAssertEqual(hit.verdict, verdict, s.name)
                let whySays = try why.why(s.name)
                XCTAssertEqual(whySays.verdict, verdict, "\(s.name): \(whySays.lines)")
                XCTAssertEqual(hit.suggestion, whySays.probes.first, "\(s.moduleName):\(s.name) (\(verdict.rawValue))")
                shapes[wantModule ? "module" : "vmlinux"] = hit.suggestion.map { $0.replacingOccurrences(of: s.name, with: "F") } ?? "none"
            }
            XCTAssertEqual(shapes["vmlinux"], shapes["module"], "\(verdict.rawValue): the same suggestion for vmlinux and modules")
            // bpftrace refuses a function missing from a readable available_filter_functions: nothing to suggest.
            if verdict == .kprobeOnly { XCTAssertEqual(shapes["module"], affReadable ? "none" : "fentry:F") }
            if verdict == .traceable { XCTAssertEqual(shapes["module"], "fentry:F") }
        }
    }

    func testVmlinuxAndModuleReferencesWithTheSameVerdictSuggestTheSameProbe() throws {
        try checkReferences(in: try DebianCapture.directory(), affReadable: true)
    }

    /// available_filter_functions unreadable: kprobe-only means "ftrace-ability unknown", and both kinds of
    /// reference get the probes `why` then suggests.
    func testTheSameWithoutAvailableFilterFunctions() throws {
        let dir = try DebianCapture.copy(withoutBTFOf: [])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.removeItem(atPath: dir + "/available_filter_functions")
        try checkReferences(in: dir, affReadable: false)
    }
}
