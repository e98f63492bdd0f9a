import Foundation
import XCTest
import KreachSupport
import KreachTestSupport

/// `kreach where` end to end on the Debian capture: a typedef defined in several modules is searched as
/// one type (it used to fall through to "no symbol matches vmlinux:…"), and --json rows carry `sites`.
final class WhereCLITests: XCTestCase {
    func testTypedefInSeveralModules() throws {
        let r = try runKreach(["where", "--kernel", try DebianCapture.directory(), "rpc_action"], timeout: 120)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("  rpc_sleep_on [sunrpc]  arg2 action: rpc_action"), r.stdout)
        XCTAssertTrue(r.stderr.contains("kreach: note: typedef rpc_action is defined in 3 objects, all searched:"), r.stderr)
        for m in ["auth_rpcgss", "nfsd", "sunrpc"] {
            XCTAssertTrue(r.stderr.contains("    \(m): rpc_action = void (*)(struct rpc_task *)"), r.stderr)
        }
    }

    func testWhereJSONHasSites() throws {
        let r = try runKreach(["where", "--kernel", try DebianCapture.directory(), "--json", "--limit", "3", "lockd:struct nlm_file"], timeout: 120)
        XCTAssertEqual(r.status, 0, r.stderr)
        let rows = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]], r.stdout)
        XCTAssertEqual(rows.count, 3)
        for row in rows { XCTAssertEqual(row["sites"] as? [String], [], "\(row)") }
    }
}
