import Glibc

/// An operating-system error with the operation and path it came from ("open /proc/kallsyms: Permission denied").
public struct SystemError: Error, CustomStringConvertible, Equatable, Sendable {
    public let operation: String
    public let path: String
    public let errno: Int32

    public init(_ operation: String, _ path: String, errno: Int32) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }

    public var reason: String { String(cString: strerror(errno)) }
    public var description: String { "\(operation) \(path): \(reason)" }
}

/// Reads files as raw bytes with plain syscalls.
///
/// Works for regular files and for /proc and /sys files, whose `st_size` is 0 or a guess:
/// the buffer grows until `read` returns 0.
public enum FileBytes {
    /// Reads the whole file at `path`. `limit` bounds the size (a kernel file larger than this is refused).
    public static func read(_ path: String, limit: Int = 1 << 30) throws(SystemError) -> [UInt8] {
        try ByteBuffer.read(path, limit: limit).toArray()
    }

    /// Reads a small text file and trims trailing white space (sysfs attributes, uname-r).
    public static func readText(_ path: String) throws(SystemError) -> String {
        let bytes = try read(path, limit: 1 << 26)
        var end = bytes.count
        while end > 0, bytes[end - 1] == 0x0A || bytes[end - 1] == 0x0D || bytes[end - 1] == 0x20 || bytes[end - 1] == 0x09 || bytes[end - 1] == 0 { end -= 1 }
        return String(decoding: bytes[0..<end], as: UTF8.self)
    }

    /// Writes `bytes` to `path`, creating or truncating it.
    public static func write(_ bytes: [UInt8], to path: String) throws(SystemError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { throw SystemError("create", path, errno: errno) }
        defer { close(fd) }
        var done = 0
        var failure: Int32 = 0
        bytes.withUnsafeBytes { raw in
            guard let base = raw.baseAddress else { return }
            while done < raw.count {
                let n = Glibc.write(fd, base + done, raw.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = errno
                    return
                }
                done += n
            }
        }
        if failure != 0 { throw SystemError("write", path, errno: failure) }
    }

    public static func write(_ text: String, to path: String) throws(SystemError) {
        try write(Array(text.utf8), to: path)
    }

    /// Whether `path` exists (any file type).
    public static func exists(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0
    }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// Names in a directory, sorted, without "." and "..".
    public static func list(_ path: String) throws(SystemError) -> [String] {
        guard let dir = opendir(path) else { throw SystemError("open directory", path, errno: errno) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw -> String in
                let bytes = raw.bindMemory(to: UInt8.self)
                let end = bytes.firstIndex(of: 0) ?? bytes.count
                return String(decoding: bytes[0..<end], as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Creates a directory and its parents (like `mkdir -p`).
    public static func makeDirectories(_ path: String) throws(SystemError) {
        var current = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, 0o755) != 0 && errno != EEXIST {
                throw SystemError("create directory", current, errno: errno)
            }
        }
    }
}

/// Standard error output and exit, for command-line front ends.
public enum StandardError {
    public static func write(_ text: String) {
        // Messages echo input (names from kernel files, arguments, scripts): no control character reaches the terminal.
        var line = Terminal.escaped(text)
        if !line.hasSuffix("\n") { line += "\n" }
        let bytes = Array(line.utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { raw in Glibc.write(2, raw.baseAddress.map { $0 + done }, raw.count - done) }
            if n <= 0 { return }
            done += n
        }
    }
}
