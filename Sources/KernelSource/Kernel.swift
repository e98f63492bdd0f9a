import Arch
import Glibc
import BTF
import KernelSymbols
import KreachSupport

/// The kernel metadata files kreach reads, wherever they live.
public enum KernelFile: String, CaseIterable, Sendable {
    case kallsyms, modules, btf, availableFilterFunctions, availableEvents, events, kprobesBlacklist
    case moduleDirectory, release, lockdown, kptrRestrict, notes

    /// The name of the file (or directory) inside a snapshot.
    public var snapshotName: String {
        switch self {
        case .kallsyms: return "kallsyms"
        case .modules: return "modules"
        case .btf: return "btf"
        case .availableFilterFunctions: return "available_filter_functions"
        case .availableEvents: return "available_events"
        case .events: return "events"
        case .kprobesBlacklist: return "kprobes_blacklist"
        case .moduleDirectory: return "module"
        case .release: return "uname-r"
        case .lockdown: return "lockdown"
        case .kptrRestrict: return "kptr_restrict"
        case .notes: return "notes"
        }
    }
}

extension KernelFile {
    /// What kreach holds in memory of this file at most (of each file in it, for directories): kallsyms
    /// and the tracing lists 64 MiB, each BTF file 512 MiB, small text and sysfs files 1 MiB. A larger
    /// file is refused with a message naming it, its kind and the cap.
    public var limit: FileLimit {
        switch self {
        case .kallsyms: return FileLimit("kallsyms", bytes: 64 << 20)
        case .modules: return FileLimit("module list", bytes: 64 << 20)
        case .btf: return BTF.fileLimit
        case .availableFilterFunctions: return FileLimit("function list", bytes: 64 << 20)
        case .availableEvents: return FileLimit("event list", bytes: 64 << 20)
        case .kprobesBlacklist: return FileLimit("kprobe blacklist", bytes: 64 << 20)
        case .events: return FileLimit("tracepoint format", bytes: 1 << 20)
        case .moduleDirectory: return FileLimit("module attribute", bytes: 1 << 20)
        case .release: return FileLimit("kernel release", bytes: 1 << 20)
        case .lockdown: return FileLimit("lockdown state", bytes: 1 << 20)
        case .kptrRestrict: return FileLimit("kptr_restrict", bytes: 1 << 20)
        case .notes: return FileLimit("kernel notes", bytes: 1 << 20)
        }
    }

    /// A module's object file (.ko, or what a .ko.xz/.ko.zst/.ko.gz decompresses to): 512 MiB.
    public static let moduleObjectLimit = FileLimit("module object", bytes: 512 << 20)
    /// /lib/modules/RELEASE/modules.dep: 64 MiB.
    public static let moduleDependenciesLimit = FileLimit("modules.dep", bytes: 64 << 20)
}

/// Where kernel metadata comes from: the running kernel, or a directory captured by `kreach snapshot`
/// (the same layout as ../shared/fixtures' raw captures). A snapshot's entries may be symbolic links: they
/// are followed for reading (the user chose the directory), and the file they lead to must still be a
/// regular file under its kind's cap. kreach never writes into a snapshot it reads.
public enum KernelSource: Sendable, Equatable {
    case live
    case snapshot(String)
}

/// Errors about the kernel being looked at as a whole.
public struct KernelError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The kernel being looked at. Loads each kind of metadata once, on first use.
public final class Kernel {
    public let source: KernelSource
    /// tracefs mount point on the live kernel (nil when not mounted).
    public let tracefs: String?

    /// Where types inferred from the kernel's code are cached (`TypeCache`: the directory holding its
    /// `types/`), or nil for no cache. Default: `defaultTypeCacheRoot`.
    public var typeCacheRoot: String? = Kernel.defaultTypeCacheRoot

    /// $KREACH_CACHE_DIR when set and not empty; else /var/cache/kreach for root, and for other users (who
    /// can't create it) $XDG_CACHE_HOME/kreach or ~/.cache/kreach, as the XDG base directory spec says.
    public static var defaultTypeCacheRoot: String {
        func env(_ name: String) -> String? {
            guard let v = getenv(name), v.pointee != 0 else { return nil }
            return String(cString: v)
        }
        if let dir = env("KREACH_CACHE_DIR") { return dir }
        if geteuid() == 0 { return "/var/cache/kreach" }
        if let xdg = env("XDG_CACHE_HOME"), xdg.hasPrefix("/") { return xdg + "/kreach" }
        if let home = env("HOME"), home.hasPrefix("/") { return home + "/.cache/kreach" }
        return "/var/cache/kreach"
    }

    private var symbolTableCache: SymbolTable?
    private var typeCache: TypeDatabase?

    public init(source: KernelSource) throws(KernelError) {
        self.source = source
        switch source {
        case .live:
            tracefs = Kernel.findTracefs()
        case .snapshot(let dir):
            guard FileBytes.isDirectory(dir) else { throw KernelError("--kernel \(dir): not a directory") }
            guard FileBytes.exists(dir + "/kallsyms") || FileBytes.exists(dir + "/btf") else {
                throw KernelError("--kernel \(dir): not a kernel snapshot (no kallsyms and no btf/); make one with `kreach snapshot DIR`")
            }
            tracefs = nil
        }
    }

    /// A short label for messages: "live kernel 6.18.44" or "snapshot DIR".
    public var label: String {
        switch source {
        case .live: return "live kernel"
        case .snapshot(let dir): return "snapshot \(dir)"
        }
    }

    static func findTracefs() -> String? {
        for candidate in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] where FileBytes.exists(candidate + "/events") {
            return candidate
        }
        return nil
    }

    /// The path of a metadata file for this kernel.
    public func path(_ file: KernelFile) -> String {
        switch source {
        case .snapshot(let dir):
            return dir + "/" + file.snapshotName
        case .live:
            let tracing = tracefs ?? "/sys/kernel/tracing"
            switch file {
            case .kallsyms: return "/proc/kallsyms"
            case .modules: return "/proc/modules"
            case .btf: return "/sys/kernel/btf"
            case .availableFilterFunctions: return tracing + "/available_filter_functions"
            case .availableEvents: return tracing + "/available_events"
            case .events: return tracing + "/events"
            case .kprobesBlacklist: return "/sys/kernel/debug/kprobes/blacklist"
            case .moduleDirectory: return "/sys/module"
            case .release: return "/proc/sys/kernel/osrelease"
            case .lockdown: return "/sys/kernel/security/lockdown"
            case .kptrRestrict: return "/proc/sys/kernel/kptr_restrict"
            case .notes: return "/sys/kernel/notes"
            }
        }
    }

    /// The bytes of a metadata file — or of `at`, a file inside a directory kind (.events, .moduleDirectory,
    /// .btf) — read under the kind's cap (`KernelFile.limit`). Only regular files are read.
    public func buffer(_ file: KernelFile, at path: String? = nil) throws(FileError) -> ByteBuffer {
        try ByteBuffer.read(path ?? self.path(file), limit: file.limit)
    }

    /// `buffer` as an array.
    public func bytes(_ file: KernelFile, at path: String? = nil) throws(FileError) -> [UInt8] {
        try FileBytes.read(path ?? self.path(file), limit: file.limit)
    }

    /// A small text file of the kind, trailing white space trimmed.
    public func text(_ file: KernelFile, at path: String? = nil) throws(FileError) -> String {
        try FileBytes.readText(path ?? self.path(file), limit: file.limit)
    }

    /// vmlinux's GNU build-id, from /sys/kernel/notes (a snapshot's `notes`); nil when unknown (an older
    /// snapshot, a kernel built without one).
    public func buildID() -> [UInt8]? {
        guard let notes = try? bytes(.notes) else { return nil }
        return ELFFile.gnuBuildID(inNotes: notes)
    }

    /// `uname -r` of the kernel.
    public func release() throws -> String { try text(.release) }

    /// The kernel's architecture: uname(2) for the live kernel; for a snapshot the machine field of its
    /// `uname-a` (the last word naming an architecture kreach knows).
    public func arch() throws -> Arch {
        guard case .snapshot(let dir) = source else { return try Arch.running() }
        let path = dir + "/uname-a"
        let words = try FileBytes.readText(path, limit: FileLimit("uname -a", bytes: 1 << 20)).split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard let machine = words.reversed().first(where: { (try? Arch(unameMachine: String($0))) != nil }) else {
            throw ArchError.unknownMachine("\(path): \(words.last.map(String.init) ?? "(empty)")")
        }
        return try Arch(unameMachine: String(machine))
    }

    /// Loaded modules (empty when the kernel has no module support: /proc/modules absent).
    public func modules() throws -> [LoadedModule] {
        let p = path(.modules)
        guard FileBytes.exists(p) else { return [] }
        let text = String(decoding: try bytes(.modules), as: UTF8.self)
        return try ModuleList.parse(text, source: p)
    }

    /// kallsyms and /proc/modules together.
    public func symbols() throws -> SymbolTable {
        if let symbolTableCache { return symbolTableCache }
        let table = SymbolTable(kallsyms: try Kallsyms(buffer: try buffer(.kallsyms), source: path(.kallsyms)), modules: try modules())
        symbolTableCache = table
        return table
    }

    /// vmlinux BTF and, on demand, every module's split BTF.
    public func types() throws -> TypeDatabase {
        if let typeCache { return typeCache }
        if case .live = source, !FileBytes.exists(path(.btf) + "/vmlinux") {
            throw KernelError("no vmlinux BTF at \(path(.btf))/vmlinux: the kernel was built without CONFIG_DEBUG_INFO_BTF")
        }
        let db = try TypeDatabase(directory: path(.btf))
        typeCache = db
        return db
    }

    /// The directory of the running kernel's modules (/lib/modules/RELEASE); nil for snapshots.
    public var moduleTree: String? {
        guard case .live = source, let release = try? release() else { return nil }
        let dir = "/lib/modules/" + release
        return FileBytes.isDirectory(dir) ? dir : nil
    }

    private var koSymbolCache: [String: [String: UInt64]] = [:]
    private var moduleObjectCache: [String: Result<ModuleObject?, KernelError>] = [:]
    private var moduleIndexCache: Result<[String: [UInt8]], KernelError>?

    /// st_size of a symbol in the module's .ko (on disk, or carried by a snapshot), or nil when unknown.
    public func moduleSymbolSize(module: String, symbol: String) -> UInt64? {
        if koSymbolCache[module] == nil {
            var sizes: [String: UInt64] = [:]
            if let elf = try? moduleELF(module), let symbols = try? elf.symbols() {
                for s in symbols where s.size > 0 && !s.name.isEmpty { sizes[s.name] = s.size }
            }
            koSymbolCache[module] = sizes
        }
        return koSymbolCache[module]?[symbol]
    }

    /// The loaded module through its .ko: live, the /lib/modules file whose build-id equals
    /// /sys/module/M/notes' (nil otherwise: kallsyms is used instead); in a snapshot, the .ko it carries
    /// (nil when it carries none), whose build-id must be the one its `ko/index` recorded — a damaged or
    /// other-build file is an error. Section bases come from module/M/sections either way.
    public func loadModuleObject(_ module: String) throws(KernelError) -> ModuleObject? {
        if let cached = moduleObjectCache[module] { return try cached.get() }
        let result = Result<ModuleObject?, KernelError> { () throws(KernelError) -> ModuleObject? in
            let elf: ELFFile
            switch source {
            case .live:
                guard let file = try? moduleELF(module), let fileID = file.buildID, liveModuleBuildID(module) == fileID else { return nil }
                elf = file
            case .snapshot:
                guard try snapshotModuleIndex()[module.replacingDashes] != nil else { return nil }
                do { elf = try moduleELF(module) } catch let error as KernelError { throw error } catch { throw KernelError("\(error)") }
            }
            let sys = path(.moduleDirectory) + "/" + module
            guard let names = try? FileBytes.list(sys + "/sections") else { return nil }
            var bases: [String: UInt64] = [:]
            for name in names {
                if let value = try? text(.moduleDirectory, at: sys + "/sections/" + name), let a = Hex.parse(Substring(value)) { bases[name] = a }
            }
            return try? ModuleObject(module: module, elf: elf, sectionBases: bases)
        }
        moduleObjectCache[module] = result
        return try result.get()
    }

    /// The running module's GNU build-id (/sys/module/M/notes/.note.gnu.build-id); nil when it has none.
    func liveModuleBuildID(_ module: String) -> [UInt8]? {
        guard case .live = source, let note = try? bytes(.moduleDirectory, at: path(.moduleDirectory) + "/\(module)/notes/.note.gnu.build-id") else { return nil }
        return ELFFile.noteDescriptor(note)
    }

    /// A snapshot's `ko/index` (`SnapshotModuleObjects`): module name (dashes as underscores) → the build-id
    /// its .ko was captured under. Empty for the live kernel and for snapshots that carry no .ko.
    public func snapshotModuleIndex() throws(KernelError) -> [String: [UInt8]] {
        if let moduleIndexCache { return try moduleIndexCache.get() }
        let result = Result<[String: [UInt8]], KernelError> { () throws(KernelError) -> [String: [UInt8]] in
            guard case .snapshot(let dir) = source else { return [:] }
            let path = dir + "/" + SnapshotModuleObjects.index
            guard FileBytes.exists(path) else { return [:] }
            let text: String
            do { text = String(decoding: try FileBytes.read(path, limit: SnapshotModuleObjects.indexLimit), as: UTF8.self) } catch { throw KernelError("\(error)") }
            return try SnapshotModuleObjects.parseIndex(text, source: path)
        }
        moduleIndexCache = result
        return try result.get()
    }

    /// The module's .ko — live, from /lib/modules/RELEASE (found through modules.dep); in a snapshot, the one
    /// it carries (`ko/BUILDID.ko.zst`, its build-id checked against `ko/index`) — decompressed in process.
    func moduleELF(_ module: String) throws -> ELFFile {
        if case .snapshot(let dir) = source {
            guard let id = try snapshotModuleIndex()[module.replacingDashes] else {
                throw KernelError("snapshot \(dir) carries no .ko for \(module) (not in \(SnapshotModuleObjects.index))")
            }
            let path = dir + "/" + SnapshotModuleObjects.file(buildID: id)
            let elf = try ELFFile(bytes: try ByteBuffer.readDecompressing(path, limit: KernelFile.moduleObjectLimit).toArray(), source: path)
            guard let fileID = elf.buildID, fileID == id else {
                throw KernelError("\(path): its build-id is \(elf.buildID.map(Hex.string) ?? "missing"), not \(Hex.string(id)), the one \(SnapshotModuleObjects.index) records for the loaded \(module): not that module's .ko")
            }
            return elf
        }
        let path = try moduleFile(module)
        // .ko.xz, .ko.zst and .ko.gz are decompressed in process, under the same cap as a .ko.
        let bytes = try ByteBuffer.readDecompressing(path, limit: KernelFile.moduleObjectLimit).toArray()
        return try ELFFile(bytes: bytes, source: path)
    }

    /// The path of the running module's .ko in /lib/modules/RELEASE, found through modules.dep.
    public func moduleFile(_ module: String) throws -> String {
        guard let tree = moduleTree else { throw KernelError("no /lib/modules tree for this kernel") }
        let dep = String(decoding: try FileBytes.read(tree + "/modules.dep", limit: KernelFile.moduleDependenciesLimit), as: UTF8.self)
        let wanted = module.replacingDashes
        for line in dep.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let file = line[..<colon]
            let base = file.split(separator: "/").last.map(String.init) ?? ""
            let name = base.components(beforeSuffix: [".ko.xz", ".ko.zst", ".ko.gz", ".ko"])
            if name?.replacingDashes == wanted { return tree + "/" + file }
        }
        throw KernelError("\(module) is not in \(tree)/modules.dep")
    }

    /// Section base addresses of a loaded module (/sys/module/<m>/sections), e.g. ".text" -> address.
    public func moduleSections(_ module: String) throws -> [(String, UInt64)] {
        let dir = path(.moduleDirectory) + "/" + module + "/sections"
        var result: [(String, UInt64)] = []
        for name in try FileBytes.list(dir) {
            let value = try text(.moduleDirectory, at: dir + "/" + name)
            if let a = Hex.parse(Substring(value)) { result.append((name, a)) }
        }
        return result
    }
}

/// The loaded modules' .ko files a snapshot carries (`kreach snapshot`): `ko/index`, one line per module,
/// `NAME BUILDID` (the loaded module's GNU build-id from /sys/module/NAME/notes, hex), and `ko/BUILDID.ko.zst`,
/// the module's .ko (decompressed from whatever /lib/modules holds, then zstd), named by that build-id.
public enum SnapshotModuleObjects {
    public static let directory = "ko"
    public static let index = "ko/index"
    /// The index is small text: 1 MiB at most.
    public static let indexLimit = FileLimit("module object index", bytes: 1 << 20)

    /// The .ko of the build-id, relative to the snapshot.
    public static func file(buildID: [UInt8]) -> String { "ko/\(Hex.string(buildID)).ko.zst" }

    /// `ko/index`'s lines; a line that isn't `NAME HEXID` (a name of word characters and dashes, a build-id of
    /// 1 to 64 bytes) is an error naming it, so no name can lead outside `ko/`.
    public static func parseIndex(_ text: String, source: String) throws(KernelError) -> [String: [UInt8]] {
        var index: [String: [UInt8]] = [:]
        for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() where !line.isEmpty {
            let words = line.split(separator: " ")
            guard words.count == 2, words[0].allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }),
                  let id = Hex.bytes(String(words[1])), (1...64).contains(id.count) else {
                throw KernelError("\(source):\(n + 1): not `MODULE BUILDID`: \(Terminal.escaped(String(line.prefix(100))))")
            }
            index[String(words[0]).replacingDashes] = id
        }
        return index
    }
}

extension String {
    /// Module names treat '-' and '_' alike.
    var replacingDashes: String { String(map { $0 == "-" ? "_" : $0 }) }

    func components(beforeSuffix suffixes: [String]) -> String? {
        for suffix in suffixes where hasSuffix(suffix) { return String(dropLast(suffix.count)) }
        return nil
    }
}
