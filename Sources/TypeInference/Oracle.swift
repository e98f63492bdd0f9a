import BTF
import KernelSymbols

/// Ground truth for type inference: the table `Benchmarks/types/dwarf-table.py` makes from a kernel
/// build's DWARF (one line per data variable: link address, name, category, resolved name, size).
public struct OracleTable: Sendable {
    public struct Row: Sendable {
        public let address: UInt64
        public let name: String
        public let category: String
        public let resolvedName: String
        public let size: UInt64
    }
    public let rows: [UInt64: [Row]]

    /// Parses the table's text; malformed lines are an error naming the line.
    public init(text: String) throws {
        var rows: [UInt64: [Row]] = [:]
        var n = 0
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            n += 1
            let f = line.split(separator: "\t", omittingEmptySubsequences: false)
            guard f.count == 5, let a = UInt64(f[0], radix: 16), let s = UInt64(f[4]) else {
                throw KernelImageError(source: "oracle table", message: "line \(n) is not ADDRESS NAME CATEGORY TYPE SIZE")
            }
            rows[a, default: []].append(Row(address: a, name: String(f[1]), category: String(f[2]), resolvedName: String(f[3]), size: s))
        }
        self.rows = rows
    }

    /// The row for a kallsyms symbol at link-time `address` named `name` (clone suffixes ignored).
    public func row(address: UInt64, name: String) -> Row? {
        let base = Kallsyms.baseName(of: name)
        return rows[address]?.first { $0.name == name || $0.name == base }
    }
}

/// Precision and recall of inferred types against an `OracleTable`, by the oracle's category.
public struct InferenceScore: Sendable, CustomStringConvertible {
    public struct Line: Sendable {
        /// Data symbols of this category the oracle knows.
        public var total = 0
        /// Of those, typed by inference.
        public var typed = 0
        /// Typed with exactly the oracle's (resolved) type name.
        public var exact = 0
        /// Typed with a type that reads right: the oracle's, or one at its offset 0 (a first member),
        /// or for arrays the element (or its first member).
        public var compatible = 0
        /// Integers: same width; pointers: pointer or 8-byte integer.
        public var width = 0
        /// Integers of the right width with the right signedness.
        public var signedness = 0
        public var recall: Double { total == 0 ? 0 : Double(typed) / Double(total) }
        public var exactPrecision: Double { typed == 0 ? 0 : Double(exact) / Double(typed) }
        public var compatiblePrecision: Double { typed == 0 ? 0 : Double(compatible) / Double(typed) }
        public var widthPrecision: Double { typed == 0 ? 0 : Double(width) / Double(typed) }
        public var signednessPrecision: Double { width == 0 ? 0 : Double(signedness) / Double(width) }
    }
    public var lines: [String: Line] = [:]
    /// Symbols typed wrongly (not layout-compatible), for inspection: name, inferred, oracle, note.
    public var wrong: [(String, String, String, String)] = []
    /// Symbols typed compatibly under another name (a first member, an array's element).
    public var inexact: [(String, String, String)] = []
    /// Symbols the oracle knows that inference left untyped: name, oracle type, inference's note.
    public var missed: [(String, String, String)] = []

    public static let categories = ["struct/union", "array", "pointer", "integer", "enum", "other"]

    /// Scores `results` (from `TypeInferrer`) against `oracle`; `slide` maps running to link addresses.
    public init(results: [InferredType], all symbols: [TypeInferrer.DataSymbol], oracle: OracleTable, btf: BTF, slide: UInt64) {
        let byIndex = Dictionary(results.map { ($0.address, $0) }, uniquingKeysWith: { a, _ in a })
        let decision = TypeDecision(btf: btf, extent: nil, evidence: [])
        for s in symbols {
            guard let row = oracle.row(address: s.address &- slide, name: s.name) else { continue }
            let category: String
            switch row.category {
            case "struct", "union": category = "struct/union"
            case "array", "pointer", "integer", "enum": category = row.category
            default: category = "other"
            }
            var line = lines[category, default: Line()]
            line.total += 1
            defer { lines[category] = line }
            guard let result = byIndex[s.address], result.name == s.name, let t = result.type,
                  let r = try? btf.resolve(t) else {
                if missed.count < 100_000 { missed.append((s.name, row.resolvedName, byIndex[s.address]?.note ?? "no evidence")) }
                continue
            }
            line.typed += 1
            let name = InferenceScore.resolvedName(btf, t)
            let size = (try? btf.size(of: r)) ?? 0
            let kind = try? btf.kind(of: r)
            if name == row.resolvedName { line.exact += 1 }
            // The oracle's type (an array's element) in BTF, by name.
            var oracleName = row.resolvedName
            if row.category == "array", let bracket = oracleName.firstIndex(of: "[") { oracleName = String(oracleName[..<bracket]) }
            let oracleTypes = InferenceScore.lookup(btf, oracleName)
            let compatible = name == row.resolvedName || oracleTypes.contains { o in o == r || decision.atOffsetZero(o).contains(r) }
                || (row.category == "integer" && kind == .int && size == row.size)
            if compatible { line.compatible += 1 } else if wrong.count < 10_000 { wrong.append((s.name, name, row.resolvedName, result.note)) }
            if compatible && name != row.resolvedName && inexact.count < 10_000 { inexact.append((s.name, name, row.resolvedName)) }
            switch row.category {
            case "integer", "enum":
                if size == row.size { line.width += 1 }
                if size == row.size, kind == .int, let bt = try? btf.type(r) {
                    let oracleSigned = !(row.resolvedName.contains("unsigned") || row.resolvedName == "_Bool")
                    if bt.isSigned == oracleSigned { line.signedness += 1 }
                }
            case "pointer":
                if kind == .pointer || (kind == .int && size == 8) { line.width += 1 }
            default: break
            }
        }
    }

    /// "struct task_struct", "unsigned int", "struct foo *", "int[4]": the oracle's spelling of a resolved type.
    /// An anonymous struct, union or enum is named by the typedef that names it ("atomic_t").
    public static func resolvedName(_ btf: BTF, _ id: TypeID, depth: Int = 0) -> String {
        var typedef: String?
        var current = id
        for _ in 0..<16 {
            guard let t = try? btf.type(current), t.kind.isAlias else { break }
            if t.kind == .typedef { typedef = t.name }
            current = t.target
        }
        guard depth < 16, let r = try? btf.resolve(current), let t = try? btf.type(r) else { return "?" }
        if t.name.isEmpty, let typedef, [.structure, .union, .enumeration, .enum64].contains(t.kind) { return typedef }
        switch t.kind {
        case .structure: return "struct " + (t.name.isEmpty ? "(anon)" : t.name)
        case .union: return "union " + (t.name.isEmpty ? "(anon)" : t.name)
        case .enumeration, .enum64: return "enum " + (t.name.isEmpty ? "(anon)" : t.name)
        case .pointer: return (t.target == 0 ? "void" : resolvedName(btf, t.target, depth: depth + 1)) + " *"
        case .array: return resolvedName(btf, t.arrayElement, depth: depth + 1) + "[\(t.arrayCount)]"
        case .int, .float: return t.name
        default: return t.kind.label
        }
    }

    /// BTF types named like the oracle names them ("struct foo" → struct foo; "int" → int).
    static func lookup(_ btf: BTF, _ name: String) -> [TypeID] {
        let parts = name.split(separator: " ", maxSplits: 1)
        let kinds: [BTFKind]
        var bare = name
        if parts.count == 2, ["struct", "union", "enum"].contains(String(parts[0])) {
            bare = String(parts[1])
            kinds = parts[0] == "struct" ? [.structure] : parts[0] == "union" ? [.union] : [.enumeration, .enum64]
        } else {
            // A base type, or the typedef of an anonymous aggregate.
            return btf.lookup(bare).compactMap { id in
                guard let k = try? btf.kind(of: id), k == .int || k == .float || k == .typedef else { return nil }
                return try? btf.resolve(id)
            }
        }
        return btf.lookup(bare).filter { id in (try? btf.kind(of: id)).map(kinds.contains) ?? false }
    }

    public var description: String {
        var out = "category       total   typed  recall  exact  compatible  width  signedness\n"
        for c in InferenceScore.categories {
            guard let l = lines[c] else { continue }
            func pct(_ x: Double) -> String { let t = Int((x * 1000).rounded()); return "\(t / 10).\(t % 10)%" }
            out += "\(c.padded(12)) \(String(l.total).leftPadded(7)) \(String(l.typed).leftPadded(7)) \(pct(l.recall).leftPadded(7)) "
            out += "\(pct(l.exactPrecision).leftPadded(6)) \(pct(l.compatiblePrecision).leftPadded(11)) \(pct(l.widthPrecision).leftPadded(6)) \(pct(l.signednessPrecision).leftPadded(11))\n"
        }
        return out
    }
}

extension String {
    func padded(_ n: Int) -> String { count >= n ? self : self + String(repeating: " ", count: n - count) }
    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}
