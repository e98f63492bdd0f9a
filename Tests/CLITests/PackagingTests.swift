import Foundation
import Glibc
import XCTest
import KreachSupport
import KreachTestSupport

/// packaging/: the systemd unit (systemd-analyze verify, and its capability bounding set measured: the
/// exporter works with exactly that set and fails without any one of it) and what build-deb installs.
/// The .deb itself is built and installed into a Debian root without Swift by Tests/deb-root (Tests/run runs
/// it after the release build).
final class PackagingTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    static let unitPath = root + "/packaging/kreach-export.service"
    var dir = ""

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("kreach-packaging-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    /// `key=value` lines of the unit (every occurrence of each key).
    func unitSettings() throws -> [String: [String]] {
        var settings: [String: [String]] = [:]
        for line in try FileBytes.readText(Self.unitPath).split(separator: "\n") where !line.hasPrefix("#") && line.contains("=") {
            let parts = line.split(separator: "=", maxSplits: 1).map(String.init)
            settings[parts[0], default: []].append(parts.count > 1 ? parts[1] : "")
        }
        return settings
    }

    func testUnitVerifiesAndIsHardened() throws {
        let unit = try unitSettings()
        XCTAssertEqual(unit["ExecStart"], ["/usr/bin/kreach export --config /etc/kreach/export.yaml"])
        XCTAssertEqual(unit["NoNewPrivileges"], ["yes"])
        XCTAssertEqual(unit["ProtectSystem"], ["strict"])
        XCTAssertEqual(unit["ExecReload"], ["/bin/kill -HUP $MAINPID"], "SIGHUP reloads the config")
        // These two would hide /proc/kallsyms and /lib/modules, which kreach reads.
        XCTAssertNil(unit["ProtectKernelTunables"])
        XCTAssertNil(unit["ProtectKernelModules"])
        // What build-deb installs where the unit expects it.
        let script = try FileBytes.readText(Self.root + "/packaging/build-deb")
        XCTAssertTrue(script.contains("\"$stage/usr/bin/kreach\""), "binary path")
        XCTAssertTrue(script.contains("\"$stage/etc/kreach/export.yaml\""), "config path")
        XCTAssertTrue(script.contains("\"$stage/lib/systemd/system/kreach-export.service\""), "unit path")
        XCTAssertTrue(script.contains("echo /etc/kreach/export.yaml > \"$stage/DEBIAN/conffiles\""), "the config is a conffile")
        // The config the package installs is valid.
        let check = try runKreach(["export", "--config", Self.root + "/examples/export.yaml", "--check-config"])
        XCTAssertEqual(check.status, 0, check.stderr)
        guard Run.available("systemd-analyze") else { throw XCTSkip("systemd-analyze not installed: unit not verified") }
        // verify needs ExecStart's binary to exist: the built one stands in for /usr/bin/kreach. It exits 0 on
        // unknown keys and bad values (it only warns), so its output must be empty too.
        let copy = dir + "/kreach-export.service"
        try FileBytes.readText(Self.unitPath).replacingOccurrences(of: "/usr/bin/kreach", with: try kreachBinary())
            .write(toFile: copy, atomically: false, encoding: .utf8)
        let verify = try Run.command(["systemd-analyze", "verify", "--man=no", copy], timeout: 60)
        XCTAssertEqual(verify.status, 0, verify.stderr)
        XCTAssertEqual(verify.stdout + verify.stderr, "")
    }

    /// The exporter under the unit's capability bounding set (uid 0, as the unit runs): it reads a symbol's
    /// address (oracle: /proc/kallsyms read here as root) and values through current; without any one of the
    /// set's capabilities it can't.
    func testUnitCapabilitiesAreTheMeasuredMinimum() throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root (setpriv limits a root process's capabilities)") }
        guard Run.available("setpriv") else { throw XCTSkip("setpriv not installed (util-linux)") }
        let caps = try XCTUnwrap(try unitSettings()["CapabilityBoundingSet"]?.first).split(separator: " ").map(String.init)
        XCTAssertEqual(caps.sorted(), ["CAP_BPF", "CAP_PERFMON", "CAP_SYSLOG"])
        let kallsyms = try FileBytes.readText("/proc/kallsyms", limit: FileLimit("kallsyms", bytes: 64 << 20))
        guard let line = kallsyms.split(separator: "\n").first(where: { $0.hasSuffix(" T vfs_read") }),
              let address = UInt64(line.prefix(16), radix: 16) else { return XCTFail("no vfs_read in /proc/kallsyms") }
        let config = dir + "/c.yaml"
        try """
            metrics:
              - name: vfs_read_address
                help: an address from kallsyms (needs CAP_SYSLOG)
                type: gauge
                expr: (unsigned long)&vfs_read
              - name: tgid
                help: read through BPF (needs CAP_BPF and CAP_PERFMON)
                type: gauge
                expr: current->tgid
            """.write(toFile: config, atomically: false, encoding: .utf8)
        func run(_ set: [String]) throws -> String? {
            let out = dir + "/out.prom"
            try? FileManager.default.removeItem(atPath: out)
            let bounding = "-all" + set.map { ",+" + $0.dropFirst(4).lowercased() }.joined()
            let r = try Run.command(["setpriv", "--inh-caps=-all", "--bounding-set=" + bounding, "--",
                                     try kreachBinary(), "export", "--config", config, "--textfile", out])
            return r.status == 0 ? try FileBytes.readText(out) : nil
        }
        let text = try XCTUnwrap(try run(caps), "the unit's capabilities suffice")
        XCTAssertTrue(text.contains("\nkreach_vfs_read_address \(address)\n"), text)
        XCTAssertTrue(text.contains("\nkreach_tgid "), text)
        for dropped in caps {
            let text = try run(caps.filter { $0 != dropped })
            XCTAssertFalse(text?.contains("\nkreach_vfs_read_address \(address)\n") == true && text?.contains("\nkreach_tgid ") == true,
                           "works without \(dropped): the set is not minimal")
        }
    }
}
