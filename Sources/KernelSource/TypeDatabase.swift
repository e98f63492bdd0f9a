import BTF
import Glibc
import KreachSupport

/// A problem finding a type.
public enum TypeLookupError: Error, CustomStringConvertible, Sendable {
    case badQuery(String, reason: String)
    case notFound(String, hint: String?)
    case ambiguous(String, candidates: [String])
    case noModuleBTF(String, directory: String)

    public var description: String {
        switch self {
        case let .badQuery(q, reason): return "bad type query \(q): \(reason)"
        case let .notFound(q, hint): return "no type matches \(q)" + (hint.map { ": \($0)" } ?? "")
        case let .ambiguous(q, candidates):
            return "\(q) is ambiguous: \(candidates.count) types match; choose one with MODULE: or #ID\n"
                + candidates.map { "  " + $0 }.joined(separator: "\n")
        case let .noModuleBTF(m, dir):
            return "no BTF for module \(m) in \(dir) (not loaded, or built without BTF, as out-of-tree/DKMS modules usually are): \(TypeLookupError.moduleBTFHowTo)"
        }
    }

    /// How a module gets BTF: named in every message about a feature that needs it.
    public static let moduleBTFHowTo = "module BTF comes from building the module against a kernel tree that has vmlinux (kbuild skips BTF without it), or from `pahole -J --btf_base VMLINUX_BTF MODULE.ko` before the module is stripped, VMLINUX_BTF being the BTF of the kernel the module is for (its /sys/kernel/btf/vmlinux, or a snapshot's btf/vmlinux), not the build host's"
}

/// A type query: `[MODULE:][KIND ]NAME` or `[MODULE:]#ID`.
///
/// KIND is struct, union, enum (also matches enum64), typedef, func, var, datasec, int, float, fwd.
/// `lockd:struct nlm_file` looks in lockd's BTF and in vmlinux, its base.
public struct TypeQuery: Equatable, Sendable {
    public var module: String?
    public var kinds: [BTFKind]
    public var name: String
    public var id: TypeID?

    public init(module: String?, kinds: [BTFKind], name: String, id: TypeID?) {
        self.module = module
        self.kinds = kinds
        self.name = name
        self.id = id
    }

    static let kindWords: [String: [BTFKind]] = [
        "struct": [.structure], "union": [.union], "enum": [.enumeration, .enum64], "typedef": [.typedef],
        "func": [.function], "var": [.variable], "datasec": [.dataSection], "int": [.int], "float": [.float],
        "fwd": [.forward],
    ]

    public static func parse(_ text: String) throws(TypeLookupError) -> TypeQuery {
        var rest = Substring(text).drop { $0 == " " }
        var module: String?
        if let colon = rest.firstIndex(of: ":") {
            let m = rest[..<colon].trimmingSpaces
            guard !m.isEmpty, !m.contains(" ") else { throw .badQuery(text, reason: "expected MODULE:TYPE") }
            module = String(m)
            rest = rest[rest.index(after: colon)...].drop { $0 == " " }
        }
        let words = rest.split(separator: " ")
        if words.count == 1, words[0].hasPrefix("#") {
            guard let id = TypeID(words[0].dropFirst()) else { throw .badQuery(text, reason: "#ID needs a number") }
            return TypeQuery(module: module, kinds: [], name: "", id: id)
        }
        switch words.count {
        case 1:
            return TypeQuery(module: module, kinds: [], name: String(words[0]), id: nil)
        case 2:
            // "unsigned int" style names are base types, not KIND NAME.
            if let kinds = kindWords[String(words[0])] {
                return TypeQuery(module: module, kinds: kinds, name: String(words[1]), id: nil)
            }
            fallthrough
        default:
            guard !words.isEmpty else { throw .badQuery(text, reason: "empty") }
            // Multi-word base types: "long unsigned int", "unsigned char".
            return TypeQuery(module: module, kinds: [.int], name: words.joined(separator: " "), id: nil)
        }
    }

    var label: String {
        let kind = kinds.first.map { $0 == .enum64 ? "enum" : $0.label }
        return (module.map { $0 + ":" } ?? "") + (id.map { "#\($0)" } ?? ((kind.map { $0 + " " } ?? "") + name))
    }
}

/// One type found in one BTF object.
public struct TypeMatch {
    public let btf: BTF
    public let id: TypeID
    public var object: String { btf.owner(of: id).objectName }
}

/// vmlinux BTF plus every module's split BTF from a /sys/kernel/btf-like directory.
///
/// vmlinux is parsed when the database is opened; a module's BTF on first use.
public final class TypeDatabase {
    public let directory: String
    public let vmlinux: BTF
    /// Names of the module BTF files present.
    public let moduleNames: [String]
    private var loaded: [String: BTF] = [:]

    /// Opens `directory`; errors say what is wrong with it (absent, not a directory, no vmlinux, vmlinux
    /// unreadable or refused, unlistable). Whether the kernel has BTF at all is the caller's to say (`Kernel`).
    public init(directory: String) throws {
        self.directory = directory
        var st = stat()
        guard stat(directory, &st) == 0 else { throw KernelError("no BTF: \(SystemError("stat", directory, errno: errno))") }
        guard st.st_mode & S_IFMT == S_IFDIR else {
            let type = st.st_mode & S_IFMT == S_IFREG ? "a regular file" : FileType(mode: st.st_mode).rawValue
            throw KernelError("no BTF: \(directory) is \(type), not a directory of BTF files")
        }
        let path = directory + "/vmlinux"
        guard lstat(path, &st) == 0 else {
            throw KernelError("no vmlinux BTF in \(directory) (\(SystemError("stat", path, errno: errno).reason)), though the directory exists")
        }
        vmlinux = try BTF(path: path, name: "vmlinux")
        moduleNames = try FileBytes.list(directory).filter { $0 != "vmlinux" }
    }

    /// A module's split BTF (vmlinux as its base).
    public func module(_ name: String) throws -> BTF {
        if name == "vmlinux" { return vmlinux }
        if let btf = loaded[name] { return btf }
        guard moduleNames.contains(name) else { throw TypeLookupError.noModuleBTF(name, directory: directory) }
        let btf = try BTF(path: directory + "/" + name, name: name, base: vmlinux)
        loaded[name] = btf
        return btf
    }

    /// vmlinux followed by every module, in name order. A module whose BTF file is gone since the directory was
    /// listed (/sys/kernel/btf/M: the module was unloaded) has no types to offer and is left out; any other
    /// failure to read a module's BTF is an error.
    public func allObjects() throws -> [BTF] {
        var all = [vmlinux]
        for m in moduleNames {
            do {
                all.append(try module(m))
            } catch where !FileBytes.exists(directory + "/" + m) {
                continue
            }
        }
        return all
    }

    /// Every type the query names. A pinned module is searched first, then vmlinux (its base).
    public func find(_ query: TypeQuery) throws -> [TypeMatch] {
        if let id = query.id {
            let btf = try module(query.module ?? "vmlinux")
            guard id != 0, id < btf.endID else { return [] }
            return [TypeMatch(btf: btf, id: id)]
        }
        let objects: [BTF]
        if let m = query.module { objects = m == "vmlinux" ? [vmlinux] : [try module(m), vmlinux] } else { objects = try allObjects() }
        var matches: [TypeMatch] = []
        for btf in objects {
            for id in btf.lookup(query.name) {
                let kind = try btf.kind(of: id)
                if query.kinds.isEmpty ? kind != .forward && kind != .declTag : query.kinds.contains(kind) {
                    matches.append(TypeMatch(btf: btf, id: id))
                }
            }
            if query.module != nil && !matches.isEmpty { break }  // the module's own definition wins over the base's
        }
        if matches.isEmpty && query.kinds != [.forward] {
            // Only a forward declaration exists: say so rather than "not found".
            for btf in objects {
                for id in btf.lookup(query.name) where try btf.kind(of: id) == .forward { matches.append(TypeMatch(btf: btf, id: id)) }
            }
        }
        return matches
    }

    /// Exactly one type for a query; an error listing candidates when there are several.
    public func resolve(_ text: String) throws -> TypeMatch {
        let query = try TypeQuery.parse(text)
        let matches = try find(query)
        switch matches.count {
        case 1: return matches[0]
        case 0:
            var hint: String?
            if query.kinds.count == 1, let other = try find(TypeQuery(module: query.module, kinds: [], name: query.name, id: nil)).first {
                hint = "there is a \((try? other.btf.kind(of: other.id).label) ?? "type") \(query.name) in \(other.object)"
            } else if query.module == nil {
                hint = "searched vmlinux and \(moduleNames.count) module BTF files"
            }
            throw TypeLookupError.notFound(text, hint: hint)
        default:
            throw TypeLookupError.ambiguous(text, candidates: matches.map { m in
                let kind = (try? m.btf.kind(of: m.id).label) ?? "?"
                return "\(m.object):#\(m.id)  \(kind) \(query.name)"
            })
        }
    }

    /// FUNC types whose names match `glob`, across vmlinux and every module.
    public func functions(matching glob: Glob, module: String? = nil) throws -> [TypeMatch] {
        var result: [TypeMatch] = []
        let objects = try module.map { [try self.module($0)] } ?? allObjects()
        for btf in objects {
            for id in btf.localIDs where try btf.kind(of: id) == .function {
                if glob.matches(try btf.name(of: id)) { result.append(TypeMatch(btf: btf, id: id)) }
            }
        }
        return result
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        var s = self
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return s
    }
}
