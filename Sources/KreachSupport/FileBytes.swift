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

/// What a file read into memory is, for messages, and how many bytes of it may be held.
///
/// Every read of a whole file names one: a file larger than `bytes` is refused with a message naming
/// the file, its kind and the cap. Kernel files choose theirs in KernelSource (`KernelFile.limit`).
public struct FileLimit: Sendable, Equatable {
    /// What the file is ("kallsyms", "BTF", "script").
    public let kind: String
    public let bytes: Int

    public init(_ kind: String, bytes: Int) {
        self.kind = kind
        self.bytes = bytes
    }

    /// A file with no more specific kind (a script, a test's input): 64 MiB.
    public static let file = FileLimit("file", bytes: 64 << 20)
    /// A small text file (a sysfs attribute, uname-r): 1 MiB.
    public static let text = FileLimit("text file", bytes: 1 << 20)

    /// "64 MiB", "512 KiB", "100 bytes".
    public var sizeLabel: String {
        if bytes >= 1 << 20 && bytes % (1 << 20) == 0 { return "\(bytes >> 20) MiB" }
        if bytes >= 1 << 10 && bytes % (1 << 10) == 0 { return "\(bytes >> 10) KiB" }
        return "\(bytes) bytes"
    }
}

/// The type of a file that is not a regular file (st_mode & S_IFMT).
public enum FileType: String, Sendable, Equatable {
    case fifo = "a FIFO", characterDevice = "a character device", blockDevice = "a block device"
    case directory = "a directory", socket = "a socket", symbolicLink = "a symbolic link", other = "not a regular file"

    public init(mode: mode_t) {
        switch mode & S_IFMT {
        case S_IFIFO: self = .fifo
        case S_IFCHR: self = .characterDevice
        case S_IFBLK: self = .blockDevice
        case S_IFDIR: self = .directory
        case S_IFSOCK: self = .socket
        case S_IFLNK: self = .symbolicLink
        default: self = .other
        }
    }
}

/// Why a file could not be read (or written): a system call failed, or the file is refused.
public enum FileError: Error, CustomStringConvertible, Equatable, Sendable {
    case system(SystemError)
    /// Only regular files are read (live /proc, /sys, tracefs and debugfs files are regular files too).
    case notRegular(path: String, kind: String, type: FileType)
    /// More than the cap of its kind (`FileLimit`).
    case tooLarge(path: String, limit: FileLimit)
    /// Compressed data that is corrupt, truncated or not of its format.
    case badCompression(path: String, format: Compression, reason: String)

    public var description: String {
        switch self {
        case .system(let e): return e.description
        case let .notRegular(path, kind, type):
            return "\(path): \(kind) is \(type == .other ? "of an unknown type" : type.rawValue), not a regular file"
        case let .tooLarge(path, limit):
            return "\(path): \(limit.kind) is larger than its \(limit.sizeLabel) cap"
        case let .badCompression(path, _, reason): return "\(path): \(reason)"
        }
    }

    /// The reason without the path (for lists that already name the file).
    public var reason: String {
        switch self {
        case .system(let e): return e.reason
        case let .notRegular(_, _, type): return type == .other ? "not a regular file" : "\(type.rawValue), not a regular file"
        case let .tooLarge(_, limit): return "larger than the \(limit.sizeLabel) cap for \(limit.kind)"
        case let .badCompression(_, _, reason): return reason
        }
    }
}

/// Reads files as raw bytes with plain syscalls.
///
/// Only regular files are read; they are opened non-blocking, so a FIFO or device put where a file is
/// expected is refused at once instead of hanging. /proc and /sys files (regular, with `st_size` 0 or a
/// guess) are read until `read` returns 0, up to the cap of their kind.
public enum FileBytes {
    /// Reads the whole file at `path`, refusing it when larger than `limit`.
    public static func read(_ path: String, limit: FileLimit = .file) throws(FileError) -> [UInt8] {
        try ByteBuffer.read(path, limit: limit).toArray()
    }

    /// Reads a small text file and trims trailing white space (sysfs attributes, uname-r).
    public static func readText(_ path: String, limit: FileLimit = .text) throws(FileError) -> String {
        let bytes = try read(path, limit: limit)
        var end = bytes.count
        while end > 0, bytes[end - 1] == 0x0A || bytes[end - 1] == 0x0D || bytes[end - 1] == 0x20 || bytes[end - 1] == 0x09 || bytes[end - 1] == 0 { end -= 1 }
        return String(decoding: bytes[0..<end], as: UTF8.self)
    }

    /// Writes `bytes` to `path`, creating or truncating it; a symbolic link there is refused (O_NOFOLLOW).
    /// (Snapshots are written through `PrivateDirectory`, which never replaces anything.)
    public static func write(_ bytes: [UInt8], to path: String) throws(SystemError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o644)
        if fd < 0 { throw SystemError("create", path, errno: errno) }
        defer { close(fd) }
        let failure = bytes.withUnsafeBytes { writeAll(fd, $0) }
        if failure != 0 { throw SystemError("write", path, errno: failure) }
    }

    /// Writes all of `bytes` to `fd`, retrying short writes and EINTR; 0 or the errno of the failure.
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Int32 {
        guard let base = bytes.baseAddress else { return 0 }
        var done = 0
        while done < bytes.count {
            let n = Glibc.write(fd, base + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                return errno
            }
            done += n
        }
        return 0
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
