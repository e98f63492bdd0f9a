import BTF
import KernelSource

/// C definitions, for bpftrace, of module types it can't find in vmlinux BTF.
///
/// Layout is reproduced exactly: members in BTF order, each hole filled with `char __kreach_padN[]`,
/// the tail padded to the BTF size; bitfields keep their declared type and width; anonymous members
/// are written inline. Module-local types used by value are defined first; vmlinux types are left to
/// bpftrace, which takes them from vmlinux BTF. Packed layouts (a member off its natural alignment)
/// are refused rather than written wrong.
struct CDefinitionWriter {
    let types: TypeDatabase
    private var done: Set<String> = []
    private(set) var definitions: [String] = []
    private var pads = 0

    init(types: TypeDatabase) { self.types = types }

    /// Defines every `struct NAME` / `union NAME` the script names that vmlinux BTF lacks and exactly one
    /// module defines (modules the script reads are preferred). Returns notes about names it skipped.
    mutating func defineNamedIn(_ script: String, preferring modules: [String]) throws -> [String] {
        var notes: [String] = []
        let words = script.split(whereSeparator: { !($0.isLetter || $0.isNumber || $0 == "_") }).map(String.init)
        var wanted: [(String, BTFKind)] = []
        for (i, w) in words.enumerated() where (w == "struct" || w == "union") && i + 1 < words.count {
            let pair = (words[i + 1], w == "struct" ? BTFKind.structure : .union)
            if !wanted.contains(where: { $0 == pair }) { wanted.append(pair) }
        }
        for (name, kind) in wanted {
            if try !types.vmlinux.lookup(name).filter({ try types.vmlinux.kind(of: $0) == kind }).isEmpty { continue }
            var found: [(BTF, TypeID)] = []
            for module in modules + types.moduleNames where !found.contains(where: { $0.0.objectName == module }) {
                guard let btf = try? types.module(module) else { continue }
                for id in btf.localIDs.reversed() where try btf.kind(of: id) == kind && btf.name(of: id) == name {
                    found.append((btf, id))
                    break
                }
                if !found.isEmpty && modules.contains(module) { break }
            }
            guard let first = found.first else { continue }  // bpftrace will say it doesn't know it
            if found.count > 1 && !modules.contains(first.0.objectName) {
                notes.append("\(kind.label) \(name) is defined by \(found.map(\.0.objectName).joined(separator: ", ")); using \(first.0.objectName)'s")
            }
            try define(first.0, first.1)
        }
        return notes
    }

    /// Defines a module-local type (and what it holds by value) unless already done or from vmlinux.
    mutating func define(_ btf: BTF, _ id: TypeID) throws {
        let owner = btf.owner(of: id)
        guard owner.objectName != "vmlinux", id != 0 else { return }
        let key = "\(owner.objectName):\(id)"
        guard !done.contains(key) else { return }
        done.insert(key)
        let t = try btf.type(id)
        switch t.kind {
        case .structure, .union:
            try defineDependencies(btf, t)
            guard !t.name.isEmpty else { return }  // anonymous ones are written inline
            definitions.append("\(t.kind == .union ? "union" : "struct") \(t.name) \(try body(btf, t));")
        case .enumeration, .enum64:
            guard !t.name.isEmpty else { return }
            let values = t.enumerators.map { "\($0.name) = \(t.isSigned ? String(Int64(bitPattern: $0.bits)) : String($0.bits))" }
            definitions.append("enum \(t.name) { \(values.joined(separator: ", ")) };")
        case .typedef:
            // A module's split BTF may repeat vmlinux typedefs (u64, __u64 on 7.x): those are bpftrace's to
            // resolve from vmlinux BTF (bpftrace 0.17 rejects `typedef long long unsigned int __u64;`).
            if try types.vmlinux.lookup(t.name).contains(where: { try types.vmlinux.kind(of: $0) == .typedef }) { return }
            try define(btf, t.target)
            definitions.append("typedef \(try btf.cDeclaration(t.target, t.name));")
        case .const, .volatile, .restrict, .typeTag, .array:
            try define(btf, t.kind == .array ? t.arrayElement : t.target)
        default:
            break  // pointers need no definition of their target in C
        }
    }

    private mutating func defineDependencies(_ btf: BTF, _ t: BTFType) throws {
        for m in t.members {
            // By-value members (through arrays, typedefs, modifiers) must be complete first.
            var id = m.type
            for _ in 0..<64 {
                let k = try btf.kind(of: id)
                if k == .array { id = try btf.type(id).arrayElement } else if k.isAlias && k != .typedef { id = try btf.type(id).target } else { break }
            }
            let k = try btf.kind(of: id)
            if k == .typedef || k == .structure || k == .union || k == .enumeration || k == .enum64 {
                if try btf.name(of: id).isEmpty, k == .structure || k == .union {
                    try defineDependencies(btf, try btf.type(id))
                } else {
                    try define(btf, id)
                }
            }
        }
    }

    /// `{ members }` with explicit padding.
    private mutating func body(_ btf: BTF, _ t: BTFType) throws -> String {
        var parts: [String] = []
        var cursorBits: UInt64 = 0
        for m in t.members {
            let size = try btf.size(of: m.type)
            if t.kind == .structure && m.bitfieldSize == 0 {
                let align = try btf.alignment(of: m.type)
                guard m.bitOffset % 8 == 0, (UInt64(m.bitOffset) / 8) % align == 0 else {
                    throw ScriptRunError("\(t.kind.label) \(t.name) is packed (\(m.name) sits off its alignment): kreach can't write it for bpftrace")
                }
                let at = UInt64(m.bitOffset) / 8, cursor = (cursorBits + 7) / 8
                if at > cursor {
                    parts.append("char __kreach_pad\(pads)[\(at - cursor)];")
                    pads += 1
                }
            }
            let inner = try btf.type(try btf.resolve(m.type))
            if m.name.isEmpty && inner.name.isEmpty && (inner.kind == .structure || inner.kind == .union) {
                parts.append("\(inner.kind == .union ? "union" : "struct") \(try body(btf, inner));")
            } else {
                parts.append(try btf.cDeclaration(m.type, m.name) + (m.bitfieldSize > 0 ? ":\(m.bitfieldSize)" : "") + ";")
            }
            let end = m.bitfieldSize > 0 ? UInt64(m.bitOffset) + UInt64(m.bitfieldSize) : UInt64(m.bitOffset) + size * 8
            cursorBits = max(cursorBits, end)
        }
        if t.kind == .structure {
            let cursor = (cursorBits + 7) / 8
            if UInt64(t.size) > cursor {
                parts.append("char __kreach_pad\(pads)[\(UInt64(t.size) - cursor)];")
                pads += 1
            }
        }
        return "{ " + parts.joined(separator: " ") + " }"
    }
}
