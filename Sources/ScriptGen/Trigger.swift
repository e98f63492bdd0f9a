import Glibc

/// Counts calls of candidate functions while a command runs: `bpftrace -c CMD` with one counting probe
/// per function, so a function called once per item of a table stands out (e.g. `cat /proc/locks`).
public struct TriggerCounter {
    public let bpftrace: Bpftrace
    public init(bpftrace: Bpftrace) { self.bpftrace = bpftrace }

    /// Probe specs (e.g. "kprobe:lock_get_status") -> calls while `command` ran.
    public func count(probes: [String], command: String) throws -> [(String, Int)] {
        guard !probes.isEmpty else { return [] }
        let script = probes.joined(separator: ",\n") + "\n{ @[probe] = count(); }\n"
        // bpftrace -c needs one binary's path: the command goes into a small shell script.
        var template = Array("/tmp/kreach-trigger-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { b in b.baseAddress.map { mkstemp($0) } ?? -1 }
        guard fd >= 0 else { throw ScriptRunError("can't create a temporary file for --trigger") }
        let path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer { unlink(path) }
        let body = Array("#!/bin/sh\n\(command)\n".utf8)
        _ = body.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        fchmod(fd, 0o700)
        close(fd)
        // bpftrace 0.17 execs only binaries, found unambiguously: /bin/sh runs the script.
        let (status, output) = try Bpftrace.outputAndStatus([bpftrace.path, "-c", "/bin/sh " + path, "-e", script])
        guard status == 0 else { throw ScriptRunError("bpftrace failed (exit \(status)) while counting calls; its message is above") }
        var counts: [String: Int] = [:]
        for line in output.split(separator: "\n") where line.hasPrefix("@[") {
            // @[kprobe:lock_get_status]: 3
            guard let close = line.firstIndex(of: "]"), let colon = line[close...].firstIndex(of: ":") else { continue }
            let probe = String(line[line.index(line.startIndex, offsetBy: 2)..<close])
            counts[probe] = Int(line[line.index(after: colon)...].filter { $0.isNumber })
        }
        return probes.map { ($0, counts[$0] ?? 0) }
    }
}
