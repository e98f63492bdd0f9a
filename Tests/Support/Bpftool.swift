import Foundation

/// `bpftool btf dump file F [-B BASE] format raw`, parsed: the oracle for BTF facts (ids, kinds, names,
/// referenced types, function prototypes with their parameter names).
public struct BpftoolRawDump {
    public struct Entry {
        public var kind: Substring
        public var name: Substring
        /// type_id= (or ret_type_id= for FUNC_PROTO); nil when the kind has none.
        public var target: Int?
        /// FUNC_PROTO parameters: (name, type id), "(anon)" names as "".
        public var params: [(name: Substring, type: Int)] = []
        /// STRUCT/UNION members: (name, bit offset, bitfield size or 0), "(anon)" names as "".
        public var members: [(name: Substring, bitOffset: Int, bitfieldSize: Int)] = []
    }

    public private(set) var entries: [Int: Entry] = [:]

    public init(file: String, base: String? = nil) throws {
        var argv = ["bpftool"]
        if let base { argv += ["-B", base] }
        argv += ["btf", "dump", "file", file, "format", "raw"]
        let dump = try Run.command(argv)
        guard dump.status == 0 else { throw FixtureError("\(argv.joined(separator: " ")) failed: \(dump.stderr)") }
        var last = 0
        for line in dump.stdout.split(separator: "\n") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard words.count >= 2 else { continue }
            let typeID = words.first { $0.hasPrefix("type_id=") || $0.hasPrefix("ret_type_id=") }
                .flatMap { Int($0.split(separator: "=")[1]) }
            func unquote(_ w: Substring) -> Substring { let n = w.dropFirst().dropLast(); return n == "(anon)" ? "" : n }
            if line.hasPrefix("[") {
                last = Int(words[0].dropFirst().dropLast()) ?? 0
                entries[last] = Entry(kind: words[1], name: unquote(words[2]), target: typeID)
            } else if entries[last]?.kind == "FUNC_PROTO", let typeID {
                entries[last]?.params.append((unquote(words[0]), typeID))
            } else if ["STRUCT", "UNION"].contains(entries[last]?.kind ?? "") {
                func value(_ key: String) -> Int { words.first { $0.hasPrefix(key + "=") }.flatMap { Int($0.dropFirst(key.count + 1)) } ?? 0 }
                entries[last]?.members.append((unquote(words[0]), value("bits_offset"), value("bitfield_size")))
            }
        }
    }

    /// The id of the struct or union with this name.
    public func named(_ name: String, kind: Substring = "STRUCT") -> Int? {
        entries.first { $0.value.kind == kind && $0.value.name == name }?.key
    }

    /// Whether `id` is `struct NAME`, or pointers to it through const/volatile/restrict/type tags, and how many pointers.
    public func pointerDepth(_ id: Int, toStruct name: String) -> Int? {
        var id = id, depth = 0
        while let e = entries[id], ["PTR", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"].contains(e.kind), let t = e.target {
            if e.kind == "PTR" { depth += 1 }
            id = t
        }
        return entries[id].map { $0.kind == "STRUCT" && $0.name == name } == true ? depth : nil
    }

    /// Functions with a parameter (index, name) or return (index -1) of type `struct NAME` or a pointer to it.
    public func functions(using name: String) -> [(function: Substring, index: Int, parameter: Substring)] {
        var result: [(Substring, Int, Substring)] = []
        for (_, e) in entries where e.kind == "FUNC" {
            guard let proto = e.target.flatMap({ entries[$0] }) else { continue }
            if let ret = proto.target, pointerDepth(ret, toStruct: name) != nil { result.append((e.name, -1, "")) }
            for (i, p) in proto.params.enumerated() where pointerDepth(p.type, toStruct: name) != nil {
                result.append((e.name, i, p.name))
            }
        }
        return result
    }
}
