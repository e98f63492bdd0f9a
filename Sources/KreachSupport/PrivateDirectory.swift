import Glibc

/// Why a directory can't be written into.
public enum PrivateDirectoryError: Error, CustomStringConvertible, Equatable, Sendable {
    case system(SystemError)
    /// The path exists and is not a directory (a symbolic link counts: it is never followed).
    case notDirectory(path: String, type: FileType?)
    case notEmpty(path: String)
    case notOwned(path: String, owner: uid_t)
    /// A relative name with an empty, "." or ".." component, or a NUL byte.
    case badName(String)

    public var description: String {
        switch self {
        case .system(let e): return e.description
        case let .notDirectory(path, type):
            return "\(path) is \(type.map { $0.rawValue } ?? "a regular file"), not a directory (kreach writes only into a directory it creates, or an empty one you own)"
        case .notEmpty(let path):
            return "\(path) is not empty (kreach writes only into a directory it creates, or an empty one you own)"
        case let .notOwned(path, owner):
            return "\(path) belongs to uid \(owner), not to you (kreach writes only into a directory it creates, or an empty one you own)"
        case .badName(let name): return "bad file name in a private directory: \(name)"
        }
    }

    /// The reason without the path, for lists that name the file.
    public var reason: String {
        if case .system(let e) = self { return e.reason }
        return description
    }
}

/// A directory kreach writes into, held open by descriptor: readable by its owner only (0700, files 0600,
/// whatever the umask). Files and subdirectories are created relative to the descriptor with
/// O_EXCL|O_NOFOLLOW (mkdirat, then opened O_NOFOLLOW), so nothing is written through a symbolic link,
/// over an existing file, or outside the directory.
public final class PrivateDirectory {
    public let path: String
    private let fd: Int32

    /// Creates `path` (its parent must exist) or takes an existing empty directory owned by this user,
    /// and makes it mode 0700. A symbolic link at `path` is refused, not followed.
    public init(creating path: String) throws(PrivateDirectoryError) {
        self.path = path
        if mkdir(path, 0o700) != 0 && errno != EEXIST { throw .system(SystemError("create directory", path, errno: errno)) }
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if fd < 0 {
            let e = errno
            var st = stat()
            if (e == ELOOP || e == ENOTDIR) && lstat(path, &st) == 0 {
                throw .notDirectory(path: path, type: st.st_mode & S_IFMT == S_IFREG ? nil : FileType(mode: st.st_mode))
            }
            throw .system(SystemError("open directory", path, errno: e))
        }
        do throws(PrivateDirectoryError) {
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw .system(SystemError("stat", path, errno: errno)) }
            guard st.st_uid == geteuid() else { throw .notOwned(path: path, owner: st.st_uid) }
            // Once 0700 and ours, nobody else can add an entry: the emptiness check below stays true.
            guard fchmod(fd, 0o700) == 0 else { throw .system(SystemError("chmod", path, errno: errno)) }
            guard try PrivateDirectory.isEmpty(fd, path) else { throw .notEmpty(path: path) }
        } catch {
            close(fd)
            throw error
        }
        self.fd = fd
    }

    deinit { close(fd) }

    private static func isEmpty(_ fd: Int32, _ path: String) throws(PrivateDirectoryError) -> Bool {
        let copy = dup(fd)
        guard copy >= 0, let dir = fdopendir(copy) else {
            let e = errno
            if copy >= 0 { close(copy) }
            throw .system(SystemError("list", path, errno: e))
        }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let isDot = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                raw[0] == 0x2E && (raw[1] == 0 || (raw[1] == 0x2E && raw[2] == 0))
            }
            if !isDot { return false }
        }
        return true
    }

    /// The components of a relative name, each neither empty, "." nor "..".
    private func components(_ name: String) throws(PrivateDirectoryError) -> [String] {
        let parts = name.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard !parts.isEmpty, !name.utf8.contains(0), parts.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }) else {
            throw .badName(name)
        }
        return parts
    }

    /// Opens (creating when absent, mode 0700) the subdirectory `parts` under the directory; the caller
    /// closes the result unless it is `fd`.
    private func openDirectory(_ parts: ArraySlice<String>) throws(PrivateDirectoryError) -> Int32 {
        var current = fd
        var walked = path
        for part in parts {
            walked += "/" + part
            if mkdirat(current, part, 0o700) == 0 {
                // umask may have removed bits: set them (no link can be here: only we write in this tree).
                _ = fchmodat(current, part, 0o700, 0)
            } else if errno != EEXIST {
                let e = errno
                if current != fd { close(current) }
                throw .system(SystemError("create directory", walked, errno: e))
            }
            let next = openat(current, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            let e = errno
            if current != fd { close(current) }
            guard next >= 0 else { throw .system(SystemError("open directory", walked, errno: e)) }
            current = next
        }
        return current
    }

    /// Creates the subdirectory `name` ("a/b/c"), and its parents, mode 0700.
    public func makeDirectory(_ name: String) throws(PrivateDirectoryError) {
        let d = try openDirectory(try components(name)[...])
        if d != fd { close(d) }
    }

    /// Creates the new file `name` ("a/b/file", parents created) holding `bytes`, mode 0600. An existing
    /// entry of that name, even a symbolic link, is an error and is left as it was.
    public func create(_ name: String, _ bytes: UnsafeRawBufferPointer) throws(PrivateDirectoryError) {
        let parts = try components(name)
        let d = try openDirectory(parts.dropLast())
        defer { if d != fd { close(d) } }
        let file = path + "/" + name
        let out = openat(d, parts[parts.count - 1], O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard out >= 0 else { throw .system(SystemError("create", file, errno: errno)) }
        defer { close(out) }
        guard fchmod(out, 0o600) == 0 else { throw .system(SystemError("chmod", file, errno: errno)) }
        let failure = FileBytes.writeAll(out, bytes)
        if failure != 0 { throw .system(SystemError("write", file, errno: failure)) }
    }

    public func create(_ name: String, _ bytes: [UInt8]) throws(PrivateDirectoryError) {
        var failure: PrivateDirectoryError?
        bytes.withUnsafeBytes { raw in
            do throws(PrivateDirectoryError) { try create(name, raw) } catch { failure = error }
        }
        if let failure { throw failure }
    }
}
