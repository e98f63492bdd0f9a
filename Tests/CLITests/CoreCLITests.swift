import Foundation
import Glibc
import KreachTestSupport
import XCTest

/// `--core FILE` from the command line: anything that isn't a usable dump is one line on stderr and exit 1,
/// and the scratch snapshot made from a dump is removed when kreach exits.
final class CoreCLITests: XCTestCase {
    func assertOneLineError(_ args: [String], _ pattern: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try runKreach(args)
        XCTAssertEqual(r.status, 1, r.stderr, file: file, line: line)
        XCTAssertEqual(r.stdout, "", file: file, line: line)
        let lines = r.stderr.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, r.stderr, file: file, line: line)
        XCTAssertNotNil(r.stderr.range(of: pattern, options: .regularExpression), "\(r.stderr) !~ \(pattern)", file: file, line: line)
    }

    func testNotADumpIsOneLine() throws {
        let text = NSTemporaryDirectory() + "kreach-core-\(getpid()).txt"
        try "hello\n".write(toFile: text, atomically: true, encoding: .utf8)
        defer { unlink(text) }
        try assertOneLineError(["show", "--core", text, "jiffies"], "^kreach: .*: not a vmcore \\(ELF, kdump-compressed or flattened makedumpfile\\): it starts with 68 65 6c 6c 6f 0a$")
        try assertOneLineError(["show", "--core", "/dev/null", "jiffies"], "^kreach: /dev/null: vmcore is a character device, not a regular file$")
        try assertOneLineError(["sym", "--core", NSTemporaryDirectory(), "jiffies"], "vmcore is a directory, not a regular file$")
    }

    /// The fixture holds only a few pages: the kallsyms tables are not among them, which kreach says, and the
    /// scratch snapshot it began is gone afterwards.
    func testADumpWithoutItsSymbolTablesSaysWhichPageIsMissingAndCleansUp() throws {
        let scratch = NSTemporaryDirectory() + "kreach-cli-core-\(getpid())"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        for format in ["vmcore.elf", "vmcore.kdump", "vmcore.flat"] {
            let r = try Run.command([try kreachBinary(), "show", "--core", try VMCoreCapture.fiveLevel.directory() + "/" + format, "jiffies"],
                                    environment: ["TMPDIR": scratch])
            XCTAssertEqual(r.status, 1, r.stderr)
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
            XCTAssertNotNil(r.stderr.range(of: "^kreach: can't read [0-9]+ bytes? at 0x[0-9a-f]+: physical 0x[0-9a-f]+ is not in the dump\n$", options: .regularExpression), r.stderr)
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: scratch), [], "\(format): the scratch snapshot is removed")
        }
    }
}
