import Glibc
import KreachSupport

/// Counts calls of candidate functions while a command runs: `bpftrace -c CMD` with one counting probe
/// per function, so a function called once per item of a table stands out (e.g. `cat /proc/locks`).
/// Calls are counted twice: by the command's process tree only (`cpid`, and every process a process of
/// the tree forks, from tracepoint:sched:sched_process_fork), and system-wide.
public struct TriggerCounter {
    public let bpftrace: Bpftrace
    public init(bpftrace: Bpftrace) { self.bpftrace = bpftrace }

    /// One probe's calls during one run.
    public struct Count: Sendable {
        public let probe: String
        /// Calls made by the command's process tree.
        public let tree: Int
        /// Calls by every process while the command ran.
        public let all: Int
    }

    /// Probe specs (e.g. "kprobe:lock_get_status") -> calls while `command` ran.
    public func count(probes: [String], command: String) throws -> [Count] {
        guard !probes.isEmpty else { return [] }
        let list = probes.joined(separator: ",\n")
        // In the fork tracepoint `pid` is the parent's tgid; bpftrace's `pid` in the probes is the caller's.
        let script = """
            BEGIN { @kreach_tree[cpid] = 1; }
            tracepoint:sched:sched_process_fork /@kreach_tree[pid]/ { @kreach_tree[args->child_pid] = 1; }
            \(list)
            { @kreach_all[probe] = count(); }
            \(list)
            /@kreach_tree[pid]/ { @kreach_by_tree[probe] = count(); }
            END { clear(@kreach_tree); }

            """
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
        // bpftrace 0.17 execs only binaries, found unambiguously: /bin/sh runs the script (the user's command is
        // the one thing run through a shell). In our process group, so Ctrl-C stops bpftrace and the command.
        let run = try Subprocess.run([bpftrace.path, "-c", "/bin/sh " + path, "-e", script], stderr: .inherit, ownProcessGroup: false)
        guard run.status == .exited(0) else { throw ScriptRunError("bpftrace failed (\(run.status)) while counting calls; its message is above") }
        let output = run.stdoutText
        var tree: [String: Int] = [:], all: [String: Int] = [:]
        for line in output.split(separator: "\n") {
            // @kreach_all[kprobe:lock_get_status]: 3
            let isTree = line.hasPrefix("@kreach_by_tree[")
            guard isTree || line.hasPrefix("@kreach_all["), let open = line.firstIndex(of: "["),
                  let close = line.firstIndex(of: "]"), open < close, let colon = line[close...].firstIndex(of: ":") else { continue }
            let probe = String(line[line.index(after: open)..<close])
            let n = Int(line[line.index(after: colon)...].filter { $0.isNumber })
            if isTree { tree[probe] = n } else { all[probe] = n }
        }
        return probes.map { Count(probe: $0, tree: tree[$0] ?? 0, all: all[$0] ?? 0) }
    }
}
