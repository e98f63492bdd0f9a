import Foundation
import XCTest
import KernelObject
import KernelSource
import Memory
import KreachTestSupport
@testable import ScriptGen

/// The attach marker of `kreach run` (issue 9's unload-guard race) on the Debian 6.1 capture: where the
/// marker goes in the script, which modules are guarded, and the check made once bpftrace has attached.
final class AttachMarkerTests: XCTestCase {
    /// A copy of the capture whose `modules` file the test can rewrite (every other entry is a symlink).
    func captureCopy() throws -> String {
        let source = try DebianCapture.directory()
        let dir = NSTemporaryDirectory() + "kreach-marker-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for entry in try fm.contentsOfDirectory(atPath: source) where entry != "modules" {
            try fm.createSymbolicLink(atPath: dir + "/" + entry, withDestinationPath: source + "/" + entry)
        }
        try fm.copyItem(atPath: source + "/modules", toPath: dir + "/modules")
        addTeardownBlock { try? fm.removeItem(atPath: dir) }
        return dir
    }

    func generator(_ dir: String, marker: String?) throws -> ScriptGenerator {
        let kernel = try Kernel(source: .snapshot(dir))
        let g = try ScriptGenerator(kernel: kernel)
        g.attachMarker = marker
        return g
    }

    func testTheMarkerGoesFirstIntoTheScriptsOwnBegin() throws {
        let g = try generator(try DebianCapture.directory(), marker: "M1")
        let out = try g.expand("BEGIN {\n  printf(\"%d\\n\", (uint64)brd`rd_size);\n}\n", file: "t.bt")
        XCTAssertTrue(out.contains("BEGIN {printf(\"M1\\n\"); \n  printf("), out)
        XCTAssertEqual(out.components(separatedBy: "BEGIN").count, 2, "bpftrace 0.17 allows one BEGIN probe: \(out)")
        XCTAssertEqual(g.guardedModules.map(\.name), ["brd"])
    }

    func testWithoutBeginOneIsAddedAtTheEnd_BeginInStringsAndCommentsIsNotABeginProbe() throws {
        let g = try generator(try DebianCapture.directory(), marker: "M2")
        let script = "// BEGIN { not code\ninterval:s:1 { printf(\"} BEGIN { %d\\n\", (uint64)brd`rd_size); /* } BEGIN { */ }\n"
        let out = try g.expand(script, file: "t.bt")
        XCTAssertTrue(out.hasSuffix("BEGIN { printf(\"M2\\n\"); }\n"), out)
        XCTAssertTrue(out.hasPrefix("// BEGIN { not code\ninterval:s:1 { printf(\"} BEGIN { %d\\n\""), out)
    }

    func testNoModuleGlobalNoMarker() throws {
        let g = try generator(try DebianCapture.directory(), marker: "M3")
        let out = try g.expand("BEGIN { printf(\"%d\\n\", (int32)`pid_max); exit(); }", file: "t.bt")
        XCTAssertFalse(out.contains("M3"), out)
        XCTAssertTrue(g.guardedModules.isEmpty)
        XCTAssertNil(try g.modulesChangedSinceResolution())
    }

    func testAModuleGoneOrMovedSinceResolutionIsReported() throws {
        let dir = try captureCopy()
        let original = try String(contentsOfFile: dir + "/modules", encoding: .utf8)
        let brdLine = try XCTUnwrap(original.split(separator: "\n").first { $0.hasPrefix("brd ") })

        let g = try generator(dir, marker: "M4")
        _ = try g.expand("interval:s:1 { @x = (uint64)brd`rd_size; @y = (int32)loop`max_loop; }", file: "t.bt")
        XCTAssertEqual(g.guardedModules.map(\.name), ["brd", "loop"])
        XCTAssertNil(try g.modulesChangedSinceResolution(), "nothing changed yet")

        // brd removed from /proc/modules (the snapshot's copy).
        try original.split(separator: "\n").filter { !$0.hasPrefix("brd ") }.joined(separator: "\n")
            .write(toFile: dir + "/modules", atomically: true, encoding: .utf8)
        XCTAssertEqual(try g.modulesChangedSinceResolution(),
                       "module brd was unloaded before the script's probes were attached; its globals are gone, exiting")

        // brd loaded again elsewhere: its address field (the 6th) changed.
        var fields = brdLine.split(separator: " ").map(String.init)
        fields[5] = "0xffffffffc0000000"
        try original.replacingOccurrences(of: String(brdLine), with: fields.joined(separator: " "))
            .write(toFile: dir + "/modules", atomically: true, encoding: .utf8)
        XCTAssertEqual(try g.modulesChangedSinceResolution(),
                       "module brd was loaded again at another address before the script's probes were attached; its globals moved, exiting")
    }
}
