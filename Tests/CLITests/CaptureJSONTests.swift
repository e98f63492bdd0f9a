import Foundation
import XCTest
import KreachSupport
import KreachTestSupport

/// `capture --json` prints one JSON object (docs/json.md), notes included, nothing on stderr.
final class CaptureJSONTests: XCTestCase {
    func testCaptureJSONParses() throws {
        let r = try runKreach(["capture", "--kernel", try DebianCapture.directory(), "--json", "brd_alloc"], timeout: 60)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stderr, "")
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
        XCTAssertEqual(object["function"] as? String, "brd_alloc")
        XCTAssertEqual(object["snippet"] as? String, "kretprobe:brd_alloc.isra.0 { @brd_alloc = (int64)retval; }")
        let notes = try XCTUnwrap(object["notes"] as? [String])
        XCTAssertTrue(notes.contains { $0.contains("exists only as its clone brd_alloc.isra.0") }, "\(notes)")
        XCTAssertTrue(notes.contains { $0.contains("brd's BTF has no FUNC brd_alloc") }, "\(notes)")
    }
}
