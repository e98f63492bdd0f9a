import BTF
import Memory

/// Member offsets from vmlinux BTF (bytes), for code that reads kernel structs by hand: a dump's own
/// metadata (`DumpMetadata`), a module's memory map (`ModuleMemoryMap`).
struct MemberOffsets {
    let btf: BTF

    func offset(_ structName: String, _ member: String) throws -> UInt64 {
        for id in btf.lookup(structName) {
            let t = try btf.type(id)
            guard t.kind == .structure || t.kind == .union, !t.members.isEmpty else { continue }
            if let bits = try find(member, in: t, depth: 0) { return bits / 8 }
        }
        throw MemoryError.unavailable("vmlinux BTF has no struct \(structName) with a member \(member)")
    }

    /// The size of struct `structName`.
    func size(_ structName: String) throws -> UInt64 {
        for id in btf.lookup(structName) {
            let t = try btf.type(id)
            if t.kind == .structure, !t.members.isEmpty { return UInt64(t.size) }
        }
        throw MemoryError.unavailable("vmlinux BTF has no struct \(structName)")
    }

    /// The value of enumerator `name` of enum `enumName`.
    func enumerator(_ name: String, of enumName: String) -> UInt64? {
        for id in btf.lookup(enumName) {
            guard let t = try? btf.type(id), t.kind == .enumeration || t.kind == .enum64,
                  let v = t.enumerators.first(where: { $0.name == name }) else { continue }
            return v.bits
        }
        return nil
    }

    /// The member's bit offset, looking into anonymous struct and union members (pcpu_hot's current_task
    /// sits in an anonymous struct inside an anonymous union), at most 8 levels deep.
    func find(_ member: String, in t: BTFType, depth: Int) throws -> UInt64? {
        if let m = t.members.first(where: { $0.name == member }) { return UInt64(m.bitOffset) }
        guard depth < 8 else { return nil }
        for m in t.members where m.name.isEmpty {
            let inner = try btf.type(try btf.skipModifiers(m.type))
            guard inner.kind == .structure || inner.kind == .union else { continue }
            if let bits = try find(member, in: inner, depth: depth + 1) { return UInt64(m.bitOffset) + bits }
        }
        return nil
    }
}
