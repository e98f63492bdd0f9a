import BTF
import Glibc
import KreachSupport

/// Why a type cache file was not used.
public struct TypeCacheError: Error, CustomStringConvertible, Sendable, Equatable {
    public let source: String
    public let message: String
    public init(source: String, message: String) {
        self.source = source
        self.message = message
    }
    public var description: String { "type cache \(source): \(message)" }
}

/// What inference decided about one vmlinux global, as `TypeCache` keeps it.
public struct TypeCacheEntry: Sendable, Equatable {
    public struct Candidate: Sendable, Equatable {
        public let type: TypeID
        /// `btf.describe(type)` when written: checked on reading against this kernel's BTF.
        public let typeName: String
        public let votes: Int
        public let sources: [String]
    }
    public let name: String
    /// The global's address minus kallsyms' `_text` (the same at every boot, whatever the KASLR slide).
    public let offset: UInt64
    /// The type chosen, nil for "no type" (no evidence, or evidence that disagrees: `note` says which).
    public let type: TypeID?
    public var typeName: String
    public let note: String
    public let candidates: [Candidate]
}

/// The file format of the inferred-type cache, one file per kernel build (little-endian):
///
///     "KREACHTC"  u32 format version  u32 inference rules version (`TypeInferrer.rulesVersion`)
///     u8 build-id length, build-id    u32 entry count
///     entries:    str name  u64 offset from _text  u8 typed  u32 type  str type name  str note
///                 u16 candidate count, each: u32 type  str type name  u32 votes  u16 source count, str sources
///     u64 FNV-1a of every byte before it
///
/// where `str` is a u16 length and UTF-8 bytes. Anything else — another version or build-id, a bad
/// checksum, a count or length past the end, trailing bytes — makes the whole file unusable.
public enum TypeCacheFormat {
    public static let magic = Array("KREACHTC".utf8)
    public static let formatVersion: UInt32 = 1
    /// A cache file: 64 MiB.
    public static let fileLimit = FileLimit("type cache", bytes: 64 << 20)
    static let maxEntries = 1 << 21, maxCandidates = 64, maxSources = 64

    public static func encode(buildID: [UInt8], entries: [TypeCacheEntry]) -> [UInt8] {
        var out = magic
        func u16(_ v: Int) { out += [UInt8(v & 0xff), UInt8(v >> 8 & 0xff)] }
        func u32(_ v: UInt32) { for k in 0..<4 { out.append(UInt8(v >> (8 * k) & 0xff)) } }
        func u64(_ v: UInt64) { for k in 0..<8 { out.append(UInt8(v >> (8 * k) & 0xff)) } }
        func str(_ s: String) {
            let b = Array(s.utf8.prefix(0xffff))
            u16(b.count)
            out += b
        }
        u32(formatVersion)
        u32(TypeInferrer.rulesVersion)
        out.append(UInt8(min(buildID.count, 255)))
        out += buildID.prefix(255)
        u32(UInt32(entries.count))
        for e in entries.sorted(by: { $0.name < $1.name }) {
            str(e.name)
            u64(e.offset)
            out.append(e.type == nil ? 0 : 1)
            u32(e.type ?? 0)
            str(e.typeName)
            str(e.note)
            let candidates = e.candidates.prefix(maxCandidates)
            u16(candidates.count)
            for c in candidates {
                u32(c.type)
                str(c.typeName)
                u32(UInt32(clamping: c.votes))
                let sources = c.sources.prefix(maxSources)
                u16(sources.count)
                for s in sources { str(s) }
            }
        }
        u64(checksum(out[...]))
        return out
    }

    /// The entries of a cache file, by name, when it is one for `buildID` under this format and rules version.
    public static func decode(_ bytes: [UInt8], buildID: [UInt8], source: String) throws(TypeCacheError) -> [String: TypeCacheEntry] {
        var r = Reader(bytes: bytes, source: source)
        guard bytes.count >= magic.count + 8, Array(bytes.prefix(magic.count)) == magic else {
            throw TypeCacheError(source: source, message: "not a kreach type cache (no KREACHTC header)")
        }
        let body = bytes.prefix(bytes.count - 8)
        let sum = bytes.suffix(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard sum == checksum(body) else { throw TypeCacheError(source: source, message: "damaged or truncated (checksum mismatch)") }
        r.end = body.count
        r.at = magic.count
        let format = try r.u32(), rules = try r.u32()
        guard format == formatVersion else { throw TypeCacheError(source: source, message: "format \(format), not \(formatVersion)") }
        guard rules == TypeInferrer.rulesVersion else {
            throw TypeCacheError(source: source, message: "written by inference rules \(rules), these are \(TypeInferrer.rulesVersion)")
        }
        let idCount = Int(try r.u8())
        let id = try r.bytes(idCount)
        guard id == buildID else {
            throw TypeCacheError(source: source, message: "for build-id \(Hex.string(id)), not this kernel's \(Hex.string(buildID))")
        }
        let count = Int(try r.u32())
        guard count <= maxEntries else { throw TypeCacheError(source: source, message: "\(count) entries, more than \(maxEntries)") }
        var entries: [String: TypeCacheEntry] = [:]
        for _ in 0..<count {
            let name = try r.string(), offset = try r.u64(), typed = try r.u8(), type = try r.u32()
            let typeName = try r.string(), note = try r.string()
            guard typed <= 1 else { throw TypeCacheError(source: source, message: "entry \(name): bad flag \(typed)") }
            let n = Int(try r.u16())
            guard n <= maxCandidates else { throw TypeCacheError(source: source, message: "entry \(name): \(n) candidates") }
            var candidates: [TypeCacheEntry.Candidate] = []
            for _ in 0..<n {
                let t = try r.u32(), tn = try r.string(), votes = Int(try r.u32()), k = Int(try r.u16())
                guard k <= maxSources else { throw TypeCacheError(source: source, message: "entry \(name): \(k) sources") }
                var sources: [String] = []
                for _ in 0..<k { sources.append(try r.string()) }
                candidates.append(.init(type: t, typeName: tn, votes: votes, sources: sources))
            }
            guard entries[name] == nil else { throw TypeCacheError(source: source, message: "entry \(name) twice") }
            entries[name] = TypeCacheEntry(name: name, offset: offset, type: typed == 1 ? type : nil, typeName: typeName,
                                           note: note, candidates: candidates)
        }
        guard r.at == r.end else { throw TypeCacheError(source: source, message: "\(r.end - r.at) bytes after the last entry") }
        return entries
    }

    /// FNV-1a (64-bit) of `bytes`: the file's last 8 bytes.
    public static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }

    /// Bounds-checked little-endian reads.
    struct Reader {
        let bytes: [UInt8]
        let source: String
        var at = 0
        var end = 0
        init(bytes: [UInt8], source: String) {
            self.bytes = bytes
            self.source = source
            end = bytes.count
        }
        mutating func bytes(_ n: Int) throws(TypeCacheError) -> [UInt8] {
            guard n >= 0, n <= end - at else { throw TypeCacheError(source: source, message: "truncated at byte \(at)") }
            defer { at += n }
            return Array(bytes[at..<(at + n)])
        }
        mutating func uint(_ n: Int) throws(TypeCacheError) -> UInt64 {
            try bytes(n).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        }
        mutating func u8() throws(TypeCacheError) -> UInt8 { UInt8(try uint(1)) }
        mutating func u16() throws(TypeCacheError) -> UInt16 { UInt16(try uint(2)) }
        mutating func u32() throws(TypeCacheError) -> UInt32 { UInt32(try uint(4)) }
        mutating func u64() throws(TypeCacheError) -> UInt64 { try uint(8) }
        mutating func string() throws(TypeCacheError) -> String {
            let b = try bytes(Int(try u16()))
            guard let s = String(validating: b, as: UTF8.self) else { throw TypeCacheError(source: source, message: "bad UTF-8 at byte \(at - b.count)") }
            return s
        }
    }
}

/// The cache directory `ROOT/types` (ROOT: `Kernel.typeCacheRoot`), one file `BUILDID.types` per kernel
/// build. Directories kreach creates are mode 0700, files 0600; both directories must be owned by this
/// user, not writable by others and not symbolic links (refused, never followed). A file is replaced
/// atomically: written to a new temporary file in the same directory (O_EXCL|O_NOFOLLOW), then renamed.
public enum TypeCacheDirectory {
    public static func fileName(_ buildID: [UInt8]) -> String { Hex.string(buildID) + ".types" }

    /// Opens ROOT/types (creating what is missing when `create`); nil when absent and not created.
    static func open(_ root: String, create: Bool) throws(TypeCacheError) -> Int32? {
        guard let top = try openChecked(AT_FDCWD, root, root, create: create) else { return nil }
        defer { close(top) }
        return try openChecked(top, "types", root + "/types", create: create)
    }

    private static func openChecked(_ at: Int32, _ name: String, _ path: String, create: Bool) throws(TypeCacheError) -> Int32? {
        var made = false
        if create {
            if mkdirat(at, name, 0o700) == 0 { made = true } else if errno != EEXIST {
                throw TypeCacheError(source: path, message: "cannot create the directory: \(String(cString: strerror(errno)))")
            }
        }
        let fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if fd < 0 {
            let e = errno
            if e == ENOENT && !create { return nil }
            var st = stat()
            if (e == ELOOP || e == ENOTDIR) && fstatat(at, name, &st, AT_SYMLINK_NOFOLLOW) == 0 {
                let what = st.st_mode & S_IFMT == S_IFLNK ? "a symbolic link" : "not a directory"
                throw TypeCacheError(source: path, message: "is \(what): refused")
            }
            throw TypeCacheError(source: path, message: "cannot open the directory: \(String(cString: strerror(e)))")
        }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            close(fd)
            throw TypeCacheError(source: path, message: "cannot stat the directory")
        }
        if made { _ = fchmod(fd, 0o700) }
        guard st.st_uid == geteuid() else {
            close(fd)
            throw TypeCacheError(source: path, message: "belongs to uid \(st.st_uid), not to you: refused")
        }
        guard made || st.st_mode & 0o022 == 0 else {
            close(fd)
            throw TypeCacheError(source: path, message: "is writable by others (mode \(String(st.st_mode & 0o777, radix: 8))): refused")
        }
        return fd
    }

    /// The cache file for `buildID` under `root`; nil when there is none.
    public static func read(root: String, buildID: [UInt8]) throws(TypeCacheError) -> [UInt8]? {
        guard let dir = try open(root, create: false) else { return nil }
        defer { close(dir) }
        let name = fileName(buildID), path = root + "/types/" + name
        let fd = openat(dir, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw TypeCacheError(source: path, message: errno == ELOOP ? "is a symbolic link: refused" : String(cString: strerror(errno)))
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_uid == geteuid() else {
            throw TypeCacheError(source: path, message: "belongs to uid \(st.st_uid), not to you: refused")
        }
        do { return try ByteBuffer.read(descriptor: fd, path: path, limit: TypeCacheFormat.fileLimit).toArray() } catch {
            throw TypeCacheError(source: path, message: error.reason)
        }
    }

    /// Replaces (atomically) the cache file for `buildID` under `root` with `bytes`; returns its path.
    @discardableResult
    public static func write(root: String, buildID: [UInt8], _ bytes: [UInt8]) throws(TypeCacheError) -> String {
        guard let dir = try open(root, create: true) else { throw TypeCacheError(source: root, message: "cannot create") }
        defer { close(dir) }
        let name = fileName(buildID), path = root + "/types/" + name
        let temporary = ".\(name).\(getpid()).tmp"
        unlinkat(dir, temporary, 0)  // one left by a process of the same pid that died writing
        let fd = openat(dir, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw TypeCacheError(source: path, message: "cannot create \(temporary): \(String(cString: strerror(errno)))") }
        var failure: Int32 = fchmod(fd, 0o600) == 0 ? 0 : errno
        if failure == 0 { failure = bytes.withUnsafeBytes { FileBytes.writeAll(fd, $0) } }
        if failure == 0 && fsync(fd) != 0 { failure = errno }
        close(fd)
        if failure == 0 && renameat(dir, temporary, dir, name) != 0 { failure = errno }
        if failure != 0 {
            unlinkat(dir, temporary, 0)
            throw TypeCacheError(source: path, message: "cannot write: \(String(cString: strerror(failure)))")
        }
        return path
    }
}
