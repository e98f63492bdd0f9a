import Foundation
import XCTest
import KernelObject
import KernelSource
import Memory
import KreachSupport
import KreachTestSupport
@testable import ScriptGen

/// Inputs the script fuzzer (Tests/fuzz, target `script`) found trapping: each must now expand or be a
/// one-line FILE:LINE:COL error, never a crash.
final class ScriptFuzzRegressionTests: XCTestCase {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("fuzz/regressions/script").path

    func generator() throws -> ScriptGenerator {
        let kernel = try Kernel(source: .snapshot(try DebianCapture.directory()))
        return try ScriptGenerator(kernel: kernel)
    }

    /// ``(int32)`p`p``: the second reference's module name was scanned back into the first reference, so the
    /// two ranges overlapped and expansion trapped ("Range requires lowerBound <= upperBound").
    func testAdjacentReferencesDoNotOverlap() throws {
        let refs = try ScriptScanner(chars: Array("(int32)`p`p brd`rd_size`pid_max"), file: "t.bt").references()
        XCTAssertEqual(refs.map(\.expression), ["`p", "`p", "brd`rd_size", "`pid_max"])
        for (a, b) in zip(refs, refs.dropFirst()) { XCTAssertLessThanOrEqual(a.range.upperBound, b.range.lowerBound) }
    }

    func testSavedInputsExpandOrFailCleanly() throws {
        let g = try generator()
        let names = try FileBytes.list(ScriptFuzzRegressionTests.directory)
        XCTAssertFalse(names.isEmpty)
        for name in names {
            let text = String(decoding: try FileBytes.read(ScriptFuzzRegressionTests.directory + "/" + name), as: UTF8.self)
            do {
                _ = try g.expand(text, file: name)
            } catch {
                XCTAssertTrue("\(error)".hasPrefix(name + ":"), "\(name): \(error)")
            }
        }
    }
}
