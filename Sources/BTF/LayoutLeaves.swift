/// One walk over the pointers and integers an object holds, for the type-inference rules that read a
/// global's bytes through a struct's layout (function-pointer members, pointers held by initial values).
extension BTF {
    /// Bounds of a layout walk.
    public struct LayoutWalk: Sendable {
        /// Levels of nesting entered (the object itself is level 0).
        public var maxDepth: Int
        /// Elements entered of each array whose elements are at least 8 bytes; 0 skips arrays.
        public var arrayElements: UInt64
        public init(maxDepth: Int, arrayElements: UInt64) {
            self.maxDepth = maxDepth
            self.arrayElements = arrayElements
        }
    }

    /// Visits each pointer (BTF_KIND_PTR) and integer (BTF_KIND_INT) inside an object of type `id`: through
    /// the byte-aligned members of structs and unions (bit-fields skipped) and the elements of arrays, with
    /// its byte offset in the object and its resolved type. `visit` returns false to end the walk.
    public func forEachLayoutLeaf(of id: TypeID, _ bounds: LayoutWalk,
                                  _ visit: (_ offset: UInt64, _ resolved: TypeID, _ type: BTFType) -> Bool) {
        var going = true
        func walk(_ t: TypeID, _ at: UInt64, _ depth: Int) {
            guard going, depth < bounds.maxDepth, let r = try? resolve(t), let ty = try? type(r) else { return }
            switch ty.kind {
            case .pointer, .int:
                going = visit(at, r, ty)
            case .structure, .union:
                for m in ty.members where m.bitfieldSize == 0 && m.bitOffset % 8 == 0 {
                    walk(m.type, at + UInt64(m.bitOffset / 8), depth + 1)
                }
            case .array:
                guard bounds.arrayElements > 0, let es = try? size(of: ty.arrayElement), es >= 8 else { return }
                for n in 0..<min(UInt64(ty.arrayCount), bounds.arrayElements) { walk(ty.arrayElement, at + n * es, depth + 1) }
            default: break
            }
        }
        walk(id, 0, 0)
    }
}
