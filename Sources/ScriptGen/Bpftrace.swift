import Glibc
import KreachSupport

/// The installed bpftrace: where it is, its version, and running it on a generated script.
public struct Bpftrace {
    public let path: String
    public let version: (major: Int, minor: Int, patch: Int)
    public let versionText: String

    /// Finds bpftrace on PATH; a clear error with how to install it when missing.
    public static func find() throws -> Bpftrace {
        let dirs = (getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin").split(separator: ":")
        guard let dir = dirs.first(where: { access("\($0)/bpftrace", X_OK) == 0 }) else {
            throw ScriptRunError("bpftrace is not installed (apt-get install bpftrace)")
        }
        let path = "\(dir)/bpftrace"
        let text = (try? Subprocess.run([path, "--version"], stderr: .null, timeout: 30).stdoutText) ?? ""
        // "bpftrace v0.17.0"
        let digits = text.split(whereSeparator: { !$0.isNumber && $0 != "." }).first.map(String.init) ?? ""
        let parts = digits.split(separator: ".").compactMap { Int($0) }
        return Bpftrace(path: path, version: (parts.count > 0 ? parts[0] : 0, parts.count > 1 ? parts[1] : 0, parts.count > 2 ? parts[2] : 0),
                        versionText: text.trimming(" ").replacing("\n", with: " "))
    }

    /// fentry/fexit were called kfunc/kretfunc before bpftrace 0.19.
    public var usesKfuncNames: Bool { version.major == 0 && version.minor < 19 }

    /// Runs bpftrace on `script` (written to a temporary file) with `arguments` before it. Its stderr is
    /// relayed with the temporary file's name replaced by `displayName`, so bpftrace's FILE:LINE:COL errors
    /// point into the user's script. Its stdout is the terminal's, unless `attachMarker` is given: then
    /// stdout is relayed too, without the lines holding the marker (the script prints it from `BEGIN`, once
    /// every probe is attached), and on the first one `onAttached` runs: a message it returns is printed
    /// and stops bpftrace. Returns bpftrace's exit status (1 when stopped that way).
    public func run(script: String, displayName: String, arguments: [String],
                    attachMarker: String? = nil, onAttached: () throws -> String? = { nil }) throws -> Int32 {
        var template = Array("/tmp/kreach-XXXXXX.bt".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { b in b.baseAddress.map { mkstemps($0, 3) } ?? -1 }
        guard fd >= 0 else { throw ScriptRunError("can't create a temporary script: \(String(cString: strerror(errno)))") }
        let tmp = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer { unlink(tmp) }
        let bytes = Array(script.utf8)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == bytes.count else { throw ScriptRunError("can't write \(tmp)") }

        // Ctrl-C reaches bpftrace (same process group), which prints its maps and exits; we wait for it.
        signal(SIGINT, SIG_IGN)
        let child = try Subprocess([path] + arguments + [tmp], stdout: attachMarker == nil ? .inherit : .pipe, stderr: .pipe,
                                   ownProcessGroup: false)
        let fds = [child.stderr, child.stdout].compactMap { $0 }
        var relays = [LineRelay(fd: fds[0], to: 2, replacing: (tmp, displayName))]
        if fds.count > 1 { relays.append(LineRelay(fd: fds[1], to: 1, replacing: nil)) }
        var stopped: String?
        var pollFDs = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        var open = fds.count
        var buf = [UInt8](repeating: 0, count: 4096)
        while open > 0 {
            if poll(&pollFDs, nfds_t(pollFDs.count), -1) < 0 {
                if errno == EINTR { continue }
                break
            }
            for k in pollFDs.indices where pollFDs[k].fd >= 0 && pollFDs[k].revents != 0 {
                let n = buf.withUnsafeMutableBytes { read(pollFDs[k].fd, $0.baseAddress, 4096) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 {
                    relays[k].flush(final: true, dropping: attachMarker) { _ in }
                    pollFDs[k].fd = -1
                    open -= 1
                    continue
                }
                relays[k].pending += buf[0..<n]
                var sawMarker = false
                relays[k].flush(final: false, dropping: attachMarker) { _ in sawMarker = true }
                if sawMarker, stopped == nil, attachMarker != nil {
                    if let message = try onAttached() {
                        stopped = message
                        StandardError.write("kreach: \(message)")
                        child.signal(SIGTERM)
                    }
                }
            }
        }
        let status = try child.wait()
        if stopped != nil { return 1 }
        return status.code  // the exit code, or 128 + the signal
    }
}

/// Whole lines from a child's pipe to one of our file descriptors.
struct LineRelay {
    let fd: Int32
    let to: Int32
    /// (text, replacement) applied to every line.
    let replacing: (String, String)?
    var pending: [UInt8] = []

    /// Writes the complete lines (all of them when `final`); a line containing `dropping` is not written
    /// but reported to `dropped`.
    mutating func flush(final: Bool, dropping: String?, dropped: (String) -> Void) {
        while let nl = pending.firstIndex(of: 10) ?? (final && !pending.isEmpty ? pending.count - 1 : nil) {
            var line = String(decoding: pending[...nl], as: UTF8.self)
            pending.removeSubrange(...nl)
            if let dropping, line.contains(dropping) {
                dropped(line)
                continue
            }
            if let (target, replacement) = replacing, !target.isEmpty { line = line.replacing(target, with: replacement) }
            if !line.hasSuffix("\n") { line += "\n" }
            var bytes = Array(line.utf8)[...]
            while !bytes.isEmpty {
                let n = bytes.withUnsafeBytes { write(to, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { return }
                bytes = bytes.dropFirst(n)
            }
        }
    }
}

public struct ScriptRunError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}
