import Foundation
import Glibc

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
/// Spawned with posix_spawn (argument list, no shell); every wait has a deadline, and on
/// timeout the whole group (the child and anything it started) is killed with SIGKILL.
public final class Child {
    public let argv: [String]
    public let pid: pid_t
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
        var inPipe: [Int32] = [0, 0], outPipe: [Int32] = [0, 0], errPipe: [Int32] = [0, 0]
        guard pipe(&inPipe) == 0, pipe(&outPipe) == 0, pipe(&errPipe) == 0 else {
            throw FixtureError("pipe: \(String(cString: strerror(errno)))")
        }
        // Not inherited by other children spawned meanwhile (dup2 onto 0, 1, 2 clears the flag in this child).
        for fd in inPipe + outPipe + errPipe { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        // Its own process group (killed as a whole on timeout), default signal dispositions and mask.
        var defaults = sigset_t()
        sigfillset(&defaults)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setsigmask(&attr, &empty)
        posix_spawnattr_setpgroup(&attr, 0)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        let envStrings = env.map { "\($0.key)=\($0.value)" }
        var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        var cEnv: [UnsafeMutablePointer<CChar>?] = envStrings.map { strdup($0) } + [nil]
        defer {
            for p in cArgs { free(p) }
            for p in cEnv { free(p) }
        }
        var child: pid_t = 0
        let r: Int32
        if argv[0].contains("/") {
            r = posix_spawn(&child, argv[0], &actions, &attr, &cArgs, &cEnv)
        } else {
            // PATH lookup in the child's environment.
            let path = env["PATH"] ?? "/usr/bin:/bin"
            let candidates: [String] = path.split(separator: ":").map { String($0) + "/" + argv[0] }
            let found = candidates.first { access($0, X_OK) == 0 }
            if let found { r = posix_spawn(&child, found, &actions, &attr, &cArgs, &cEnv) } else { r = ENOENT }
        }
        close(inPipe[0]); close(outPipe[1]); close(errPipe[1])
        guard r == 0 else {
            close(inPipe[1]); close(outPipe[0]); close(errPipe[0])
            throw FixtureError("can't run \(argv[0]): \(String(cString: strerror(r)))")
        }
        pid = child
        outFD = outPipe[0]
        errFD = errPipe[0]
        inFD = inPipe[1]
        pendingInput = Array((stdin ?? "").utf8)
        if pendingInput.isEmpty { close(inFD); inFD = -1 }
        for fd in [outFD, errFD, inFD] where fd >= 0 { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
    }

    deinit {
        if status == nil {
            kill(-pid, SIGKILL)
            var s: Int32 = 0
            waitpid(pid, &s, 0)
        }
        for fd in [outFD, errFD, inFD] where fd >= 0 { close(fd) }
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
                if n < 0 && errno != EAGAIN || pendingInput.isEmpty { close(inFD); inFD = -1 }
                continue
            }
            var buffer = [UInt8](repeating: 0, count: 65536)
            let n = buffer.withUnsafeMutableBytes { Glibc.read(f.fd, $0.baseAddress, $0.count) }
            if n > 0 {
                if f.fd == outFD { stdout += buffer[0..<n] } else { stderr += buffer[0..<n] }
            } else if n == 0 || errno != EAGAIN && errno != EINTR {
                close(f.fd)
                if f.fd == outFD { outFD = -1 } else { errFD = -1 }
            }
        }
    }

    private func reap(block: Bool) {
        guard status == nil else { return }
        var s: Int32 = 0
        let r = waitpid(pid, &s, block ? 0 : WNOHANG)
        if r == pid {
            // Exit code, or 128 + the signal that ended it (as a shell reports it).
            status = (s & 0x7f) == 0 ? (s >> 8) & 0xff : 128 + (s & 0x7f)
        } else if r < 0 && errno == ECHILD {
            status = -1  // reaped by someone else (SIGCHLD ignored in this process): the status is lost
        }
    }

    private func timedOut(_ seconds: Double) -> TimeoutError {
        kill(-pid, SIGKILL)
        reap(block: true)
        return TimeoutError(argv: argv, seconds: seconds, stdout: stdoutText, stderr: stderrText)
    }

    /// Waits for a line on stdout containing `text` (an event the child reports), or fails after `timeout`.
    public func waitForOutput(containing text: String, timeout: Double) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !stdoutText.contains(text) {
            if outFD < 0 {
                reap(block: true)
                throw FixtureError("\(argv[0]) closed its output (status \(status ?? -1)) without printing \(text): \(stdoutText) \(stderrText)")
            }
            guard Date() < deadline else { throw timedOut(timeout) }
            pump(100)
        }
    }

    /// Sends a signal to the child only.
    public func signal(_ number: Int32) { kill(pid, number) }

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
    public static func available(_ program: String) -> Bool {
        (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
            .contains { access("\($0)/\(program)", X_OK) == 0 }
    }
}
