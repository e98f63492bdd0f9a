import Glibc

/// Writing node_exporter's textfile-collector file atomically.
public enum TextFile {
    public struct WriteError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Writes `text` to a new temporary file in `path`'s directory (O_CREAT|O_EXCL|O_NOFOLLOW, 0644, so
    /// node_exporter can read it), fsyncs it and renames it over `path`, so readers see the old or the new file.
    public static func write(_ text: String, to path: String) throws {
        let slash = path.lastIndex(of: "/")
        let dir = slash.map { String(path[..<$0]) }.map { $0.isEmpty ? "/" : $0 } ?? "."
        let base = slash.map { String(path[path.index(after: $0)...]) } ?? path
        guard !base.isEmpty, base != ".", base != ".." else { throw WriteError(description: "--textfile needs a file name, not \(path)") }
        let dirFD = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dirFD >= 0 else { throw WriteError(description: "can't open directory \(dir): \(String(cString: strerror(errno)))") }
        defer { close(dirFD) }
        let temp = ".\(base).\(getpid()).tmp"
        let fd = openat(dirFD, temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw WriteError(description: "can't create \(dir)/\(temp): \(String(cString: strerror(errno)))") }
        var ok = false
        defer { if !ok { unlinkat(dirFD, temp, 0) } }
        let bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes[done...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { close(fd); throw WriteError(description: "can't write \(dir)/\(temp): \(String(cString: strerror(errno)))") }
            done += n
        }
        _ = fchmod(fd, 0o644)  // whatever the umask
        guard fsync(fd) == 0, close(fd) == 0 else { throw WriteError(description: "can't write \(dir)/\(temp): \(String(cString: strerror(errno)))") }
        guard renameat(dirFD, temp, dirFD, base) == 0 else {
            throw WriteError(description: "can't rename \(temp) to \(path): \(String(cString: strerror(errno)))")
        }
        ok = true
    }
}
