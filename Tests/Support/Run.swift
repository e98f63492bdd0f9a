import Foundation
import Glibc
import KreachSupport
import XCTest

/// A subprocess that did not finish in time: its process group was killed.
public struct TimeoutError: Error, CustomStringConvertible {
    public let argv: [String]
    public let seconds: Double
    public let stdout: String
    public let stderr: String
    public var description: String {
        "timed out after \(Int(seconds)) s (process group killed): \(argv.joined(separator: " "))\n"
            + "stdout so far: \(stdout.suffix(2000))\nstderr so far: \(stderr.suffix(2000))"
    }
}

/// A child process in its own process group, with pipes for stdin, stdout and stderr.
/// Spawned by KreachSupport's `Subprocess` (posix_spawn, argument list, no shell); every wait has a
/// deadline, and on timeout the whole group (the child and anything it started) is killed with SIGKILL.
public final class Child {
    public let argv: [String]
    public let pid: pid_t
    private let process: Subprocess
    private var outFD: Int32
    private var errFD: Int32
    private var inFD: Int32
    private var pendingInput: [UInt8]
    public private(set) var stdout: [UInt8] = []
    public private(set) var stderr: [UInt8] = []
    public private(set) var status: Int32?

    /// Starts argv[0] (looked up in PATH when not a path). `environment` entries replace or add variables.
    public init(_ argv: [String], stdin: String? = nil, environment: [String: String] = [:]) throws {
        precondition(!argv.isEmpty)
        self.argv = argv
        do {
            process = try Subprocess(argv, stdin: .pipe, stdout: .pipe, stderr: .pipe, environment: environment)
        } catch {
            throw FixtureError("\(error)")
        }
        pid = process.pid
        outFD = process.stdout ?? -1
        errFD = process.stderr ?? -1
        inFD = process.stdin ?? -1
        pendingInput = Array((stdin ?? "").utf8)
        if pendingInput.isEmpty { closeInput() }
        for fd in [outFD, errFD, inFD] where fd >= 0 { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
    }

    /// The Subprocess owns the descriptors: it closes them, and kills and reaps an unfinished child.
    private func closeInput() {
        process.closeStdin()
        inFD = -1
    }

    public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    public var stderrText: String { String(decoding: stderr, as: UTF8.self) }

    /// Moves data through the pipes for at most `milliseconds`; returns when something happened.
    private func pump(_ milliseconds: Int32) {
        var fds: [pollfd] = []
        if outFD >= 0 { fds.append(pollfd(fd: outFD, events: Int16(POLLIN), revents: 0)) }
        if errFD >= 0 { fds.append(pollfd(fd: errFD, events: Int16(POLLIN), revents: 0)) }
        if inFD >= 0 { fds.append(pollfd(fd: inFD, events: Int16(POLLOUT), revents: 0)) }
        guard !fds.isEmpty else {
            _ = poll(nil, 0, milliseconds)  // output closed, child still running: check its exit again shortly
            return
        }
        guard poll(&fds, nfds_t(fds.count), milliseconds) > 0 else { return }
        for f in fds where f.revents != 0 {
            if f.fd == inFD {
                let n = pendingInput.withUnsafeBytes { Glibc.write(inFD, $0.baseAddress, $0.count) }
                if n > 0 { pendingInput.removeFirst(n) }
                if n < 0 && errno != EAGAIN || pendingInput.isEmpty { closeInput() }
                continue
            }
            var buffer = [UInt8](repeating: 0, count: 65536)
            let n = buffer.withUnsafeMutableBytes { Glibc.read(f.fd, $0.baseAddress, $0.count) }
            if n > 0 {
                if f.fd == outFD { stdout += buffer[0..<n] } else { stderr += buffer[0..<n] }
            } else if n == 0 || errno != EAGAIN && errno != EINTR {
                if f.fd == outFD { outFD = -1 } else { errFD = -1 }
            }
        }
    }

    private func reap(block: Bool) {
        guard status == nil else { return }
        do {
            // Exit code, or 128 + the signal that ended it (as a shell reports it).
            status = try (block ? process.wait() : process.poll())?.code
        } catch {
            status = -1  // reaped by someone else (SIGCHLD ignored in this process): the status is lost
        }
    }

    private func timedOut(_ seconds: Double) -> TimeoutError {
        process.signal(SIGKILL)
        reap(block: true)
        return TimeoutError(argv: argv, seconds: seconds, stdout: stdoutText, stderr: stderrText)
    }

    /// Waits for a line on stdout containing `text` (an event the child reports), or fails after `timeout`.
    public func waitForOutput(containing text: String, timeout: Double) throws {
        try waitFor(text, in: \.stdoutText, timeout: timeout)
    }

    /// Waits for stderr to contain `text`, or fails after `timeout`.
    public func waitForError(containing text: String, timeout: Double) throws {
        try waitFor(text, in: \.stderrText, timeout: timeout)
    }

    private func waitFor(_ text: String, in stream: KeyPath<Child, String>, timeout: Double) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !self[keyPath: stream].contains(text) {
            if outFD < 0 && errFD < 0 {
                reap(block: true)
                throw FixtureError("\(argv[0]) closed its output (status \(status ?? -1)) without printing \(text): \(stdoutText) \(stderrText)")
            }
            guard Date() < deadline else { throw timedOut(timeout) }
            pump(100)
        }
    }

    /// Sends a signal to the child only.
    public func signal(_ number: Int32) { if status == nil { kill(pid, number) } }

    /// Waits for the child to exit and its output to close; on timeout kills its process group and throws.
    @discardableResult
    public func wait(timeout: Double) throws -> Int32 {
        let deadline = Date().addingTimeInterval(timeout)
        while outFD >= 0 || errFD >= 0 || status == nil {
            guard Date() < deadline else { throw timedOut(timeout) }
            pump(100)
            reap(block: false)
        }
        return status ?? -1
    }
}

/// Runs programs and captures their output, each with a timeout.
public enum Run {
    public struct Result {
        public let status: Int32
        public let stdout: String
        public let stderr: String
    }

    /// The default bound on any subprocess of a test; $KREACH_TEST_TIMEOUT overrides it (seconds), e.g. under TCG.
    public static var defaultTimeout: Double {
        ProcessInfo.processInfo.environment["KREACH_TEST_TIMEOUT"].flatMap(Double.init) ?? 120
    }

    /// Runs argv[0] (looked up in PATH when not a path) with the rest as arguments. A run longer than
    /// `timeout` seconds kills the process group and throws a `TimeoutError` naming the command.
    public static func command(_ argv: [String], stdin: String? = nil, environment: [String: String] = [:],
                               timeout: Double? = nil) throws -> Result {
        let child = try Child(argv, stdin: stdin, environment: environment)
        let status = try child.wait(timeout: timeout ?? defaultTimeout)
        return Result(status: status, stdout: child.stdoutText, stderr: child.stderrText)
    }

    /// Whether a program is on PATH.
    public static func available(_ program: String) -> Bool { Subprocess.find(program) != nil }
}

extension Child {
    /// Runs `body` with `count` children of this thread (`sleep 600`) and the pids /proc/thread-self/children
    /// lists for them; skips with a reason where that file doesn't exist (CONFIG_PROC_CHILDREN off). The
    /// children are killed and reaped afterwards.
    public static func withSleepingChildren(_ count: Int, _ body: (_ children: [Child], _ listed: [String]) throws -> Void) throws {
        guard FileManager.default.fileExists(atPath: "/proc/thread-self/children") else {
            throw XCTSkip(Host.skipReason("no /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN off)"))
        }
        var children: [Child] = []
        defer {
            for c in children {
                c.signal(SIGKILL)
                _ = try? c.wait(timeout: Run.defaultTimeout)
            }
        }
        for _ in 0..<count { children.append(try Child(["sleep", "600"])) }
        let listed = try FileBytes.readText("/proc/thread-self/children").split(separator: " ").map(String.init)
        try body(children, listed)
    }
}
