import XCTest
import KreachSupport
import KreachTestSupport

/// `kreach type --of MODULE:GLOBAL` where no .ko can be had: one clear line, a non-zero exit.
final class ModuleTypeOfCLITests: XCTestCase {
    func testAModuleGlobalWithoutItsKoIsAClearError() throws {
        let r = try runKreach(["type", "--kernel", try DebianCapture.directory(), "--of", "loop:loop_misc"])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertEqual(r.stdout, "")
        let lines = r.stderr.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, r.stderr)
        XCTAssert(r.stderr.contains("loop:loop_misc: a module global is typed from the loaded module's own .ko"), r.stderr)
    }
}
