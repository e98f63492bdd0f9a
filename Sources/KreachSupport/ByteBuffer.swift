import Glibc

/// An immutable block of bytes with a stable address for the object's lifetime.
///
/// Parsers (BTF, kallsyms, ELF) keep one and read it through `pointer`; every read they make is
/// bounds-checked against `count` by the parser itself.
public final class ByteBuffer: @unchecked Sendable {
    public let pointer: UnsafeRawPointer
    public let count: Int
    /// Length of the read-only mapping to unmap, or nil when the bytes are malloc'd.
    private let mappedLength: Int?

    /// Takes ownership of `storage` (allocated with malloc).
    private init(storage: UnsafeMutableRawPointer, count: Int) {
        self.pointer = UnsafeRawPointer(storage)
        self.count = count
        self.mappedLength = nil
    }

    private init(mapping: UnsafeMutableRawPointer, count: Int, mappedLength: Int) {
        self.pointer = UnsafeRawPointer(mapping)
        self.count = count
        self.mappedLength = mappedLength
    }

    /// Takes ownership of an anonymous mapping of `mappedLength` bytes whose first `count` are filled.
    public static func adopting(_ mapping: UnsafeMutableRawPointer, count: Int, mappedLength: Int) -> ByteBuffer {
        ByteBuffer(mapping: mapping, count: count, mappedLength: mappedLength)
    }

    deinit {
        if let mappedLength {
            munmap(UnsafeMutableRawPointer(mutating: pointer), mappedLength)
        } else {
            free(UnsafeMutableRawPointer(mutating: pointer))
        }
    }

    /// Maps a regular file read-only (PROT_READ, MAP_PRIVATE) when its size is known and the file allows it
    /// (/sys/kernel/btf/vmlinux on kernels that support mmap of it); otherwise reads it. Nothing is ever
    /// written through the mapping. Refuses what `read` refuses.
    public static func mapOrRead(_ path: String, limit: FileLimit) throws(FileError) -> ByteBuffer {
        let (fd, size) = try openRegular(path, limit: limit)
        defer { close(fd) }
        if size > 0 {
            let p = mmap(nil, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0)
            if let p, p != MAP_FAILED {
                return ByteBuffer(mapping: p, count: size, mappedLength: size)
            }
        }
        return try read(fd, path, size: size, limit: limit)
    }
    /// Copies `bytes`.
    public convenience init(_ bytes: [UInt8]) {
        guard let storage = malloc(max(bytes.count, 1)) else { fatalError("out of memory") }
        bytes.withUnsafeBytes { raw in
            if let base = raw.baseAddress { storage.copyMemory(from: base, byteCount: raw.count) }
        }
        self.init(storage: storage, count: bytes.count)
    }

    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: pointer, count: count) }

    public func toArray() -> [UInt8] { Array(bytes) }

    /// Opens `path` for reading if it is a regular file no larger than `limit` (as far as `st_size` says);
    /// returns the descriptor and `st_size`. O_NONBLOCK makes opening a FIFO return at once (to be
    /// refused) instead of waiting for a writer; it is cleared before reading.
    public static func openRegular(_ path: String, limit: FileLimit) throws(FileError) -> (Int32, Int) {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        if fd < 0 { throw .system(SystemError("open", path, errno: errno)) }
        var st = stat()
        if fstat(fd, &st) != 0 {
            let e = errno
            close(fd)
            throw .system(SystemError("stat", path, errno: e))
        }
        guard st.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            throw .notRegular(path: path, kind: limit.kind, type: FileType(mode: st.st_mode))
        }
        guard Int(st.st_size) <= limit.bytes else {
            close(fd)
            throw .tooLarge(path: path, limit: limit)
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        return (fd, Int(st.st_size))
    }

    /// Reads the whole regular file at `path` into one buffer with a stable address; refuses other file
    /// types and files larger than `limit`.
    ///
    /// A file with a size goes into a mapping of its size. /proc and /sys files have no size: the first
    /// 64 KiB are read into a small buffer (most such files end there); a larger one continues into a
    /// reserved anonymous mapping of the cap (MAP_NORESERVE), which never moves as it fills and is backed
    /// only where written.
    public static func read(_ path: String, limit: FileLimit = .file) throws(FileError) -> ByteBuffer {
        let (fd, size) = try openRegular(path, limit: limit)
        defer { close(fd) }
        return try read(fd, path, size: size, limit: limit)
    }

    /// Reads the rest of the regular file open at `fd` (named `path` in messages), refusing other file
    /// types and files larger than `limit`; the caller keeps and closes `fd`.
    public static func read(descriptor fd: Int32, path: String, limit: FileLimit) throws(FileError) -> ByteBuffer {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .system(SystemError("stat", path, errno: errno)) }
        guard st.st_mode & S_IFMT == S_IFREG else { throw .notRegular(path: path, kind: limit.kind, type: FileType(mode: st.st_mode)) }
        guard Int(st.st_size) <= limit.bytes else { throw .tooLarge(path: path, limit: limit) }
        return try read(fd, path, size: Int(st.st_size), limit: limit)
    }

    private static func read(_ fd: Int32, _ path: String, size: Int, limit: FileLimit) throws(FileError) -> ByteBuffer {
        if size <= 0 {
            // Most /proc and /sys files are small: one 64 KiB read decides before reserving big.
            let small = min(1 << 16, limit.bytes + 1)
            guard let buffer = malloc(small) else { throw .system(SystemError("allocate for", path, errno: ENOMEM)) }
            var total = 0
            while total < small {
                let n = Glibc.read(fd, buffer + total, small - total)
                if n < 0 {
                    if errno == EINTR { continue }
                    let e = errno
                    free(buffer)
                    throw .system(SystemError("read", path, errno: e))
                }
                if n == 0 { return ByteBuffer(storage: buffer, count: total) }
                total += n
            }
            // Larger: continue into a reservation, after what was read.
            defer { free(buffer) }
            return try readIntoReservation(fd, path, reserve: limit.bytes + 1, first: UnsafeRawBufferPointer(start: buffer, count: total), limit: limit)
        }
        return try readIntoReservation(fd, path, reserve: size + 1, first: nil, limit: limit)
    }

    /// Reads the rest of `fd` into a reserved anonymous mapping of `reserve` bytes (transparent huge pages
    /// when allowed), after the bytes of `first` already read. Reads go 1 MiB at a time: /proc/sys handlers
    /// kmalloc count+1 bytes, so a 4 MiB read fails there.
    /// A regular file that grows past its size while read is refused as too large when past `limit`.
    private static func readIntoReservation(_ fd: Int32, _ path: String, reserve: Int, first: UnsafeRawBufferPointer?,
                                            limit: FileLimit) throws(FileError) -> ByteBuffer {
        // From 2 MiB up, mapped in whole 2 MiB huge pages: the kernel aligns only such a length to huge pages
        // (since 6.12), and an unaligned start left the first megabytes to 4 KiB page faults (1,000 more for
        // kallsyms). A smaller file keeps its size: a huge page would be 2 MiB to clear for a few bytes.
        // Reads still stop at `reserve`.
        let hugePage = 2 << 20
        let mapped = reserve < hugePage ? reserve : (reserve + hugePage - 1) / hugePage * hugePage
        let p = mmap(nil, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let storage = p, storage != MAP_FAILED else { throw .system(SystemError("reserve memory for", path, errno: errno)) }
        _ = madvise(storage, mapped, MADV_HUGEPAGE)
        var total = 0
        if let first, let base = first.baseAddress {
            storage.copyMemory(from: base, byteCount: first.count)
            total = first.count
        }
        while true {
            if total == reserve {
                munmap(storage, mapped)
                if total > limit.bytes { throw .tooLarge(path: path, limit: limit) }
                throw .system(SystemError("read", path, errno: EFBIG))  // grew while being read
            }
            let n = Glibc.read(fd, storage + total, min(reserve - total, 1 << 20))
            if n < 0 {
                if errno == EINTR { continue }
                let e = errno
                munmap(storage, mapped)
                throw .system(SystemError("read", path, errno: e))
            }
            if n == 0 { break }
            total += n
        }
        return ByteBuffer(mapping: storage, count: total, mappedLength: mapped)
    }

    @inline(__always) public func u8(_ offset: Int) -> UInt8 { pointer.load(fromByteOffset: offset, as: UInt8.self) }
    @inline(__always) public func u16(_ offset: Int) -> UInt16 {
        UInt16(littleEndian: pointer.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }
    @inline(__always) public func u32(_ offset: Int) -> UInt32 {
        UInt32(littleEndian: pointer.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }
    @inline(__always) public func u64(_ offset: Int) -> UInt64 {
        UInt64(littleEndian: pointer.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    /// The NUL-terminated string at `offset`, ending no later than `end`; nil when unterminated.
    public func cString(at offset: Int, end: Int) -> String? {
        guard offset >= 0, offset < end, end <= count else { return nil }
        let start = pointer + offset
        guard let nul = memchr(start, 0, end - offset) else { return nil }
        let length = UnsafeRawPointer(nul) - start
        return String(decoding: UnsafeRawBufferPointer(start: start, count: length), as: UTF8.self)
    }
}
