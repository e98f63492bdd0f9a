import KreachSupport

/// What `kreach show` prints for one expression: an object as drgn-style text or a JSON value; a container
/// walk as one entry per line (the whole entry, or `ADDRESS f1=v1 f2=v2` for `fields`) or a JSON object
/// with the count and the entries.
public struct ShowRenderer {
    public let evaluator: Evaluator
    public let formatter: ObjectFormatter
    /// Member paths printed per walked entry (`pid`, `mm->map_count`); empty: the whole entry.
    public var fields: [String]
    public var json: Bool

    public init(evaluator: Evaluator, formatter: ObjectFormatter, fields: [String] = [], json: Bool = false) {
        self.evaluator = evaluator
        self.formatter = formatter
        self.fields = fields
        self.json = json
    }

    /// One expression's output. A failure part-way keeps the text lines made before it (and no JSON).
    public struct Rendering {
        /// Text lines for stdout (text mode).
        public var lines: [String] = []
        /// The expression's JSON result (JSON mode), nil on error.
        public var json: JSON?
        /// Notes for the user (the evaluator's and the formatter's), for stderr.
        public var notes: [String] = []
        /// Why the expression failed, if it did.
        public var error: Error?
    }

    public func render(_ expression: String) -> Rendering {
        var out = Rendering()
        evaluator.clearWarnings()
        evaluator.walkFields = fields
        _ = formatter.takeNotes()
        do {
            switch try evaluator.evaluate(expression) {
            case .object(let o):
                if json {
                    out.json = .object([("expression", .string(expression)), ("type", .string(o.type.name)),
                                        ("address", o.address.map { .string(Self.hex($0)) } ?? .null),
                                        ("value", try formatter.json(o))])
                } else {
                    out.lines.append(try formatter.text(o))
                }
            case .entries(let entries, _):
                var rows: [JSON] = []
                // Integer fields the in-kernel walk copied print straight from their values: their types
                // are looked up once, not per entry.
                let integers = fields.map { f in
                    evaluator.copiedLayout[f].flatMap { c in (try? formatter.integerFormat(of: c.type)).map { (c, $0) } }
                }
                for (position, entry) in entries.enumerated() {
                    // An indexed walk's entries say their index: `[7] ...` ("index" in JSON).
                    let key: [(String, JSON)] = entry.index.map { [("index", .uint($0))] } ?? []
                    let prefix = entry.index.map { "[\($0)] " } ?? ""
                    guard let entryAddress = entry.address else {
                        // A value entry (for_each_cpu's CPU numbers, a scalar TYPE's slots): its value.
                        if json { rows.append(.object(key + [("value", try formatter.json(entry))])) } else { out.lines.append(prefix + (try formatter.compact(entry))) }
                        continue
                    }
                    let address = Self.hex(entryAddress)
                    if fields.isEmpty {
                        if json { rows.append(.object(key + [("address", .string(address)), ("value", try formatter.json(entry))])) } else { out.lines.append(prefix + (try formatter.text(entry))) }
                        continue
                    }
                    var parts: [String] = []
                    var jf: [(String, JSON)] = []
                    for (f, integer) in zip(fields, integers) {
                        if !json, let (copied, format) = integer, let v = evaluator.prefetchedValue(copied, at: position, entry: entryAddress) {
                            parts.append(f + "=" + formatter.compact(v, as: format))
                            continue
                        }
                        let v = try evaluator.prefetchedField(f, of: entry) ?? evaluator.evaluate(field: f, of: entry)
                        if json { jf.append((f, try formatter.json(v))) } else { parts.append("\(f)=\(try formatter.compact(v))") }
                    }
                    if json { rows.append(.object(key + [("address", .string(address)), ("fields", .object(jf))])) } else { out.lines.append(prefix + address + " " + parts.joined(separator: " ")) }
                }
                if json { out.json = .object([("expression", .string(expression)), ("count", .uint(UInt64(entries.count))), ("entries", .array(rows))]) }
            }
        } catch {
            out.error = error
        }
        out.notes = evaluator.warnings
        for n in formatter.takeNotes() where !out.notes.contains(n) { out.notes.append(n) }
        return out
    }

    static func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
}
