import Glibc

/// How a program ended: its exit code, or the signal that killed it.
public enum ExitStatus: Equatable, Sendable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    /// From waitpid's status word.
    init(waitStatus s: Int32) {
        self = s & 0x7f == 0 ? .exited((s >> 8) & 0xff) : .signaled(s & 0x7f)
    }

    /// As a shell reports it: the exit code, or 128 + the signal.
    public var code: Int32 {
        switch self {
        case .exited(let c): return c
        case .signaled(let s): return 128 + s
        }
    }

    public var description: String {
        switch self {
        case .exited(let c): return "exit \(c)"
        case .signaled(let s): return "killed by signal \(s)"
        }
    }
}

/// A program that could not be run, or did not finish in time.
public enum SpawnError: Error, CustomStringConvertible, Equatable {
    case noProgram
    case notFound(String)
    case spawn(String, errno: Int32)
    case pipe(errno: Int32)
    case wait(String, errno: Int32)
    /// The run took longer than `seconds`: its process group was killed (SIGKILL).
    case timedOut(String, seconds: Double)

    public var description: String {
        switch self {
        case .noProgram: return "no program to run (empty argument list)"
        case .notFound(let p): return "can't run \(p): not found on PATH"
        case let .spawn(p, e): return "can't run \(p): \(String(cString: strerror(e)))"
        case .pipe(let e): return "can't create a pipe: \(String(cString: strerror(e)))"
        case let .wait(p, e): return "waiting for \(p): \(String(cString: strerror(e)))"
        case let .timedOut(p, s): return "\(p) did not finish within \(s.formatted) s: its process group was killed"
        }
    }
}

private extension Double {
    var formatted: String { self == rounded() ? String(Int(self)) : String(self) }
}

/// A child process started with posix_spawn from an argument list: never through a shell (a shell runs
/// only when argv[0] is one, for a command the user wrote as a shell command). Each of stdin, stdout and
/// stderr is inherited, /dev/null or a pipe whose other end this object holds. In its own process group
/// (the default) a timeout or `deinit` kills the child and everything it started; in ours (interactive
/// runs) Ctrl-C at the terminal reaches it too.
public final class Subprocess {
    public enum Stream: Sendable { case inherit, null, pipe }

    public let argv: [String]
    public let pid: pid_t
    public let ownProcessGroup: Bool
    /// Our ends of the pipes asked for (stdin: write end; stdout, stderr: read ends), close-on-exec.
    public private(set) var stdin: Int32?
    public let stdout: Int32?
    public let stderr: Int32?
    public private(set) var status: ExitStatus?

    /// Starts argv[0] (a path, or a name looked up in PATH) with argv as its arguments. `environment`
    /// entries replace or add variables of ours.
    public init(_ argv: [String], stdin: Stream = .inherit, stdout: Stream = .inherit, stderr: Stream = .inherit,
                ownProcessGroup: Bool = true, environment: [String: String] = [:]) throws(SpawnError) {
        guard let program = argv.first else { throw .noProgram }
        guard let path = Subprocess.find(program, path: environment["PATH"]) else { throw .notFound(program) }
        self.argv = argv
        self.ownProcessGroup = ownProcessGroup
        // Pipes: (child's fd, child end, our end).
        var pipes: [(fd: Int32, child: Int32, ours: Int32)] = []
        func closeAll() { for p in pipes { close(p.child); close(p.ours) } }
        for (fd, stream) in [(Int32(0), stdin), (1, stdout), (2, stderr)] where stream == .pipe {
            var p: [Int32] = [0, 0]
            guard pipe(&p) == 0, fcntl(p[0], F_SETFD, FD_CLOEXEC) == 0, fcntl(p[1], F_SETFD, FD_CLOEXEC) == 0 else {
                let e = errno
                closeAll()
                throw .pipe(errno: e)
            }
            pipes.append(fd == 0 ? (fd, p[0], p[1]) : (fd, p[1], p[0]))
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for p in pipes { posix_spawn_file_actions_adddup2(&actions, p.child, p.fd) }  // dup2 clears close-on-exec
        for (fd, stream) in [(Int32(0), stdin), (1, stdout), (2, stderr)] where stream == .null {
            posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0)
        }
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        // Default dispositions and an empty mask: what we ignore (SIGINT while bpftrace runs) is not inherited.
        var all = sigset_t(), none = sigset_t()
        sigfillset(&all)
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setsigmask(&attr, &none)
        var flags = Int32(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK)
        if ownProcessGroup {
            posix_spawnattr_setpgroup(&attr, 0)
            flags |= Int32(POSIX_SPAWN_SETPGROUP)
        }
        posix_spawnattr_setflags(&attr, Int16(flags))

        var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        var env: [UnsafeMutablePointer<CChar>?] = []
        var p = environ
        while let entry = p.pointee {
            let text = String(cString: entry)
            let name = String(text.prefix { $0 != "=" })
            if environment[name] == nil { env.append(strdup(entry)) }
            p += 1
        }
        for (k, v) in environment { env.append(strdup("\(k)=\(v)")) }
        env.append(nil)
        defer {
            for a in cArgs { free(a) }
            for e in env { free(e) }
        }
        var child: pid_t = 0
        let r = posix_spawn(&child, path, &actions, &attr, &cArgs, &env)
        for p in pipes { close(p.child) }
        guard r == 0 else {
            for p in pipes { close(p.ours) }
            throw .spawn(program, errno: r)
        }
        pid = child
        self.stdin = pipes.first { $0.fd == 0 }?.ours
        self.stdout = pipes.first { $0.fd == 1 }?.ours
        self.stderr = pipes.first { $0.fd == 2 }?.ours
    }

    deinit {
        if status == nil && ownProcessGroup {
            Glibc.kill(-pid, SIGKILL)
            var s: Int32 = 0
            while waitpid(pid, &s, 0) < 0 && errno == EINTR {}
        }
        for fd in [stdin, stdout, stderr].compactMap({ $0 }) { close(fd) }
    }

    /// The full path of `program`: itself when it has a slash, else the first executable of that name in
    /// `path` (default $PATH, /usr/bin:/bin without one).
    public static func find(_ program: String, path: String? = nil) -> String? {
        if program.contains("/") { return program }
        let path = path ?? getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(program)" }.first { access($0, X_OK) == 0 }
    }

    /// Closes our end of the child's stdin (it sees end of file).
    public func closeStdin() {
        if let fd = stdin { close(fd) }
        stdin = nil
    }

    /// Sends `signal` to the child's process group when it has its own, else to the child.
    public func signal(_ signal: Int32) {
        guard status == nil else { return }
        Glibc.kill(ownProcessGroup ? -pid : pid, signal)
    }

    /// The child's status if it has exited (reaped now), nil while it runs.
    public func poll() throws(SpawnError) -> ExitStatus? {
        try reap(block: false)
    }

    /// Waits for the child to exit.
    @discardableResult
    public func wait() throws(SpawnError) -> ExitStatus {
        guard let s = try reap(block: true) else { throw .wait(argv[0], errno: ECHILD) }
        return s
    }

    private func reap(block: Bool) throws(SpawnError) -> ExitStatus? {
        if let status { return status }
        var s: Int32 = 0
        while true {
            let r = waitpid(pid, &s, block ? 0 : WNOHANG)
            if r == pid { break }
            if r == 0 { return nil }
            if errno != EINTR { throw .wait(argv[0], errno: errno) }
        }
        status = ExitStatus(waitStatus: s)
        return status
    }

    /// Kills the process group (or the child) with SIGKILL and reaps it.
    public func kill() {
        signal(SIGKILL)
        _ = try? wait()
    }

    /// What `run` collected.
    public struct Output: Sendable {
        public let status: ExitStatus
        public let stdout: [UInt8]
        public let stderr: [UInt8]
        public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
        public var stderrText: String { String(decoding: stderr, as: UTF8.self) }
    }

    /// Runs `argv` to the end: `input` on its stdin (or /dev/null), stdout and stderr collected (stderr
    /// passed through when `stderr` is `.inherit`). With a `timeout` (seconds) a longer run kills the
    /// child's process group and throws `.timedOut`.
    public static func run(_ argv: [String], input: [UInt8] = [], stderr: Stream = .pipe, timeout: Double? = nil,
                           ownProcessGroup: Bool = true, environment: [String: String] = [:]) throws(SpawnError) -> Output {
        let child = try Subprocess(argv, stdin: input.isEmpty ? .null : .pipe, stdout: .pipe, stderr: stderr,
                                   ownProcessGroup: ownProcessGroup, environment: environment)
        var collected: [[UInt8]] = [[], []]
        var pending = input[...]
        let deadline = timeout.map { Monotonic.now + $0 }
        while true {
            var fds: [pollfd] = []
            for fd in [child.stdout, child.stderr].compactMap({ $0 }) where !child.closed.contains(fd) {
                fds.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0))
            }
            if let fd = child.stdin { fds.append(pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)) }
            var wait: Int32 = -1
            if let deadline {
                let left = deadline - Monotonic.now
                guard left > 0 else {
                    child.kill()
                    throw .timedOut(argv[0], seconds: timeout ?? 0)
                }
                wait = Int32(min(left * 1000 + 1, 60_000))
            }
            if fds.isEmpty {
                // Outputs closed: the child is exiting (or has closed them and runs on, bounded by the timeout).
                if deadline == nil { break }
                if try child.poll() != nil { break }
                _ = Glibc.poll(nil, 0, min(wait, 10))
                continue
            }
            let n = Glibc.poll(&fds, nfds_t(fds.count), wait)
            if n < 0 && errno != EINTR { throw .wait(argv[0], errno: errno) }
            for f in fds where f.revents != 0 {
                if f.fd == child.stdin {
                    let w = pending.withUnsafeBytes { Glibc.write(f.fd, $0.baseAddress, $0.count) }
                    if w > 0 { pending = pending.dropFirst(w) }
                    if w < 0 && errno != EINTR && errno != EAGAIN || pending.isEmpty { child.closeStdin() }
                    continue
                }
                var buffer = [UInt8](repeating: 0, count: 65536)
                let r = buffer.withUnsafeMutableBytes { Glibc.read(f.fd, $0.baseAddress, $0.count) }
                if r > 0 {
                    collected[f.fd == child.stdout ? 0 : 1] += buffer[0..<r]
                } else if r == 0 || errno != EINTR && errno != EAGAIN {
                    child.closed.insert(f.fd)
                }
            }
        }
        let status = try child.wait()
        return Output(status: status, stdout: collected[0], stderr: collected[1])
    }

    /// Our read ends that reached end of file in `run`.
    private var closed: Set<Int32> = []
}

/// CLOCK_MONOTONIC in seconds, for deadlines.
public enum Monotonic {
    public static var now: Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }
}
