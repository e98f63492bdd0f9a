import BTF

/// The function-pointer members of every struct and union in vmlinux BTF, indexed by their offset and
/// prototype: which types a global could be whose initial bytes hold given functions at given offsets
/// (`TypeInferrer.functionPointerType`). Built once, on first use.
final class FunctionSlotIndex {
    /// A function prototype, resolved: its return type then its parameters (typedefs and modifiers skipped).
    typealias Signature = [TypeID]
    struct Key: Hashable {
        let offset: UInt64
        let signature: Signature
    }
    /// One struct or union: its function-pointer members by offset (a union may put several at one
    /// offset), and the offsets of `void *` and 8-byte integer members (where a function address says
    /// nothing: `struct tracepoint`'s `iterator`).
    struct Layout {
        var functions: [UInt64: [Signature]] = [:]
        var untyped = Set<UInt64>()
    }
    /// Types with a function-pointer member of that prototype at that offset.
    private(set) var byKey: [Key: [TypeID]] = [:]
    private(set) var layouts: [TypeID: Layout] = [:]
    /// The typedef naming an anonymous struct or union (`typedef struct { … } foo_t`).
    private(set) var typedefOf: [TypeID: TypeID] = [:]
    static let maxSlots = 512

    init(btf: BTF) {
        for id in btf.localIDs where (try? btf.kind(of: id)) == .typedef {
            guard let t = try? btf.type(id), let r = try? btf.skipModifiers(t.target), let k = try? btf.kind(of: r),
                  k == .structure || k == .union, (try? btf.name(of: r))?.isEmpty == true, typedefOf[r] == nil else { continue }
            typedefOf[r] = id
        }
        for id in btf.localIDs {
            guard let k = try? btf.kind(of: id), k == .structure || k == .union,
                  let name = try? btf.name(of: id), !name.isEmpty || typedefOf[id] != nil,
                  let size = try? btf.size(of: id), size > 0 else { continue }
            var layout = Layout(), count = 0
            btf.forEachLayoutLeaf(of: id, .init(maxDepth: 6, arrayElements: 64)) { at, _, ty in
                if ty.kind == .int {
                    if ty.size == 8 { layout.untyped.insert(at) }
                    return true
                }
                count += 1
                if let p = try? btf.resolve(ty.target) {
                    if p == 0 {
                        layout.untyped.insert(at)
                    } else if (try? btf.kind(of: p)) == .functionProto, let s = FunctionSlotIndex.signature(btf, proto: p) {
                        layout.functions[at, default: []].append(s)
                    }
                }
                return count < FunctionSlotIndex.maxSlots
            }
            guard !layout.functions.isEmpty else { continue }
            for (offset, signatures) in layout.functions {
                for s in Set(signatures) { byKey[Key(offset: offset, signature: s), default: []].append(id) }
            }
            layouts[id] = layout
        }
    }

    /// Whether a prototype names a struct or union (a pointer to one among its parameters or its return):
    /// `int (*)(void *, void *)` fits too many functions to say what holds it.
    static func isSpecific(_ btf: BTF, _ signature: Signature) -> Bool {
        signature.contains { t in
            guard t != 0, let ty = try? btf.type(t), ty.kind == .pointer, let p = try? btf.resolve(ty.target),
                  let k = try? btf.kind(of: p) else { return false }
            return k == .structure || k == .union
        }
    }

    /// The signature of FUNC_PROTO `proto`.
    static func signature(_ btf: BTF, proto: TypeID) -> Signature? {
        guard let p = try? btf.prototypeTypes(proto) else { return nil }
        return signature(btf, returns: p.returns, parameters: p.params.filter { $0 != 0 })
    }

    static func signature(_ btf: BTF, returns: TypeID, parameters: [TypeID]) -> Signature? {
        var s: Signature = []
        for t in [returns] + parameters {
            guard let r = t == 0 ? 0 : try? btf.resolve(t) else { return nil }
            s.append(r)
        }
        return s
    }
}

extension TypeInferrer {
    /// What a global's initial bytes say through the functions they hold: a function's address at an
    /// offset where a struct has a function pointer of that function's BTF prototype.
    struct FunctionPointerVerdict {
        /// The struct or union (its typedef when anonymous).
        let type: TypeID
        /// Function addresses at members of their prototype.
        let matches: Int
        /// One of them, for the note ("ext4_file_read_iter at +16").
        let example: String
    }

    /// Largest extent whose initial bytes are read.
    static let maxInitialBytes: UInt64 = 1 << 16

    /// The struct or union whose function-pointer members explain every function address in `symbol`'s
    /// initial bytes (the image's data):
    ///
    /// - a function at offset o must sit at a function-pointer member at o whose prototype is the
    ///   function's BTF prototype (a match; a name BTF gives several prototypes — static functions in
    ///   different files — matches by any of them, and the tie rule below keeps it from deciding alone), or at a `void *` / 8-byte integer member, or be a function
    ///   without a BTF prototype (clones) at some function-pointer member;
    /// - every function-pointer member holds zero or a function;
    /// - the type fits the extent (gap to the next symbol) and the bytes past it, up to the next symbol,
    ///   are zero (padding, not another object);
    /// - at least two matches, or one of a prototype naming a struct (`FunctionSlotIndex.isSpecific`);
    /// - the most matches win; a tie between types is broken by the smallest padding, else nothing.
    func functionPointerType(_ symbol: DataSymbol, accept: (TypeID) -> Bool = { _ in true }) -> FunctionPointerVerdict? {
        guard let extent = symbol.extent, extent >= 8, extent <= TypeInferrer.maxInitialBytes else { return nil }
        let link = symbol.address &- slide
        guard link % 8 == 0, let bytes = image.bytes(link..<(link + extent)) else { return nil }
        var words: [UInt64: UInt64] = [:]
        var found: [(offset: UInt64, name: String, signatures: [FunctionSlotIndex.Signature])] = []
        bytes.withUnsafeBytes { raw in
            var o = 0
            while o + 8 <= raw.count {
                let w = raw.loadUnaligned(fromByteOffset: o, as: UInt64.self)
                if w != 0 {
                    words[UInt64(o)] = w
                    if let name = functions.names[w] { found.append((UInt64(o), name, functions.signatures(at: w))) }
                }
                o += 8
            }
        }
        guard found.contains(where: { !$0.signatures.isEmpty }) else { return nil }
        let index = functionSlotIndex
        var candidates = Set<TypeID>()
        for f in found {
            for s in f.signatures { candidates.formUnion(index.byKey[FunctionSlotIndex.Key(offset: f.offset, signature: s)] ?? []) }
        }
        var ranked: [(type: TypeID, matches: Int, size: UInt64, example: String)] = []
        for c in candidates {
            guard let size = try? btf.size(of: c), size <= extent, let layout = index.layouts[c], accept(c) else { continue }
            // Bytes past the type, to the next symbol: zero.
            guard bytes.dropFirst(Int(size)).allSatisfy({ $0 == 0 }) else { continue }
            var matches = 0, specific = false, example = "", consistent = true
            for f in found {
                let wanted = layout.functions[f.offset]
                if let s = f.signatures.first(where: { wanted?.contains($0) == true }) {
                    matches += 1
                    specific = specific || FunctionSlotIndex.isSpecific(btf, s)
                    if example.isEmpty { example = "\(f.name)() at +\(f.offset)" }
                } else if wanted != nil && f.signatures.isEmpty || layout.untyped.contains(f.offset) {
                    continue
                } else {
                    consistent = false
                    break
                }
            }
            guard consistent else { continue }
            // Every function-pointer member holds nothing or a function.
            guard layout.functions.keys.allSatisfy({ o in words[o].map { functions.names[$0] != nil } ?? true }) else { continue }
            // One match of a prototype naming no struct is too weak alone.
            guard specific || matches >= 2 else { continue }
            ranked.append((c, matches, size, example))
        }
        // The most matches; among equals, the innermost of types nested at offset 0 (a wrapper's other
        // members must hold something to be chosen: the bytes past the inner one are zero).
        ranked.sort { $0.matches != $1.matches ? $0.matches > $1.matches : $0.size < $1.size }
        guard let best = ranked.first, best.matches > 0 else { return nil }
        let nested = TypeDecision(btf: btf, extent: nil, evidence: [])
        for other in ranked.dropFirst() where other.matches == best.matches {
            guard other.size > best.size, nested.atOffsetZero(other.type).contains(best.type) else { return nil }
        }
        return FunctionPointerVerdict(type: index.typedefOf[best.type] ?? best.type, matches: best.matches, example: best.example)
    }
}
