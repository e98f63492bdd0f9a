import BTF
import CDwarf
import KreachSupport

/// Why DWARF debug info could not be read.
public struct DWARFError: Error, CustomStringConvertible, Sendable, Equatable {
    public let source: String
    public let message: String
    public var description: String { "DWARF \(source): \(message)" }
}

/// A variable's type as DWARF debug info gives it (modifiers skipped, typedefs kept): what kreach maps to
/// BTF by name and size.
public struct DWARFType: Sendable, Equatable {
    public enum Kind: Sendable, Equatable { case structure, union, typedef, base, enumeration, pointer, array, other }
    public let kind: Kind
    /// The type's name ("" when anonymous).
    public let name: String
    public let size: UInt64

    /// C spelling ("struct miscdevice", "spinlock_t", "int").
    public var spelling: String {
        switch kind {
        case .structure: "struct " + name
        case .union: "union " + name
        case .enumeration: "enum " + name
        default: name
        }
    }

    /// The BTF type of the same kind, name and size (struct, union, enum, typedef, integer); nil when BTF
    /// has none or the DWARF type is anonymous, a pointer or an array.
    public func btfType(in btf: BTF) -> TypeID? {
        let want: [BTFKind]
        switch kind {
        case .structure: want = [.structure]
        case .union: want = [.union]
        case .typedef: want = [.typedef]
        case .base: want = [.int]
        case .enumeration: want = [.enumeration, .enum64]
        default: return nil
        }
        guard !name.isEmpty else { return nil }
        // A split BTF's lookup sees its own types only: vmlinux's are its base's.
        return (btf.lookup(name) + (btf.base?.lookup(name) ?? [])).first { id in
            guard let k = try? btf.kind(of: id), want.contains(k) else { return false }
            guard let s = try? btf.size(of: id) else { return false }
            return UInt64(s) == size
        }
    }
}

/// Variables' types from an ELF file's DWARF (.debug_info) through libdw: Debian's
/// `linux-image-*-dbg` (/usr/lib/debug/lib/modules/RELEASE/vmlinux and …/kernel/…/M.ko), or a .ko that
/// still carries its debug info (dkms builds often do). Never required: kreach uses it when it is there.
public enum DWARFTypes {
    /// Top-level DIEs visited in one file: 64 Mi (a whole vmlinux has a few million).
    public static let maxDIEs: UInt64 = 64 << 20

    /// The type of the variable `name` defined in `path`, and the file's GNU build-id; nil type when the file
    /// has no such variable. Several definitions with different types (static variables of one name in
    /// several files) are an error.
    public static func variable(_ name: String, in path: String) throws(DWARFError) -> (type: DWARFType?, buildID: [UInt8]) {
        var out = kreach_dwarf_type()
        var id = [UInt8](repeating: 0, count: 64)
        var idSize = id.count
        var error = [CChar](repeating: 0, count: 256)
        let found = kreach_dwarf_variable_type(path, name, maxDIEs, &out, &id, &idSize, &error, error.count)
        let buildID = Array(id.prefix(idSize))
        guard found >= 0 else {
            throw DWARFError(source: path, message: String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        guard found > 0 else { return (nil, buildID) }
        guard found == 1 else { throw DWARFError(source: path, message: "\(found) variables named \(name) have different types") }
        let kinds: [Int32: DWARFType.Kind] = [Int32(KREACH_DWARF_STRUCT): .structure, Int32(KREACH_DWARF_UNION): .union,
                                              Int32(KREACH_DWARF_TYPEDEF): .typedef, Int32(KREACH_DWARF_BASE): .base,
                                              Int32(KREACH_DWARF_ENUM): .enumeration, Int32(KREACH_DWARF_POINTER): .pointer,
                                              Int32(KREACH_DWARF_ARRAY): .array]
        let typeName = withUnsafeBytes(of: out.name) { raw in String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self) }
        return (DWARFType(kind: kinds[out.kind] ?? .other, name: typeName, size: out.size), buildID)
    }
}

/// Where DWARF for the running kernel or a module may be, and a global's type from the first such file
/// of the right build.
public enum DebugInfoFiles {
    /// Debian's `linux-image-RELEASE-dbg`: /usr/lib/debug/boot/vmlinux-RELEASE (…/lib/modules/RELEASE/vmlinux
    /// is a symbolic link to it, never followed).
    public static func vmlinux(release: String, root: String = "/usr/lib/debug") -> [String] {
        [root + "/boot/vmlinux-" + release, root + "/lib/modules/" + release + "/vmlinux"]
    }

    /// A module's .ko at `koPath` (/lib/modules/RELEASE/…/M.ko[.xz|.zst|.gz]): the -dbg package's copy
    /// under `root`, then the .ko itself when it is not compressed (dkms builds often keep their DWARF).
    public static func module(koPath: String, root: String = "/usr/lib/debug") -> [String] {
        var plain = koPath
        for suffix in [".xz", ".zst", ".gz"] where plain.hasSuffix(suffix) { plain = String(plain.dropLast(suffix.count)) }
        var files = [root + plain]
        if plain == koPath { files.append(koPath) }
        return files
    }

    /// The BTF type of `name` from the first of `files` that exists, has DWARF and the GNU build-id
    /// `buildID`, with the note naming the file; nil when none says (or the type has no BTF equal by name
    /// and size). A file of another build is skipped; its DWARF says nothing about this one.
    public static func type(of name: String, files: [String], buildID: [UInt8], btf: BTF) -> (TypeID, String)? {
        for file in files where FileBytes.exists(file) {
            guard let (found, id) = try? DWARFTypes.variable(name, in: file), id == buildID else { continue }
            guard let found else { return nil }
            guard let t = found.btfType(in: btf) else { return nil }
            return (t, "type from DWARF debug info (\(file))")
        }
        return nil
    }
}
