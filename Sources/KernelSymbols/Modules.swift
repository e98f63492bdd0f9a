import KreachSupport

/// One line of /proc/modules.
public struct LoadedModule: Sendable, Equatable {
    public let name: String
    public let size: UInt64
    /// Reference count.
    public let users: Int
    /// Modules that use this one.
    public let usedBy: [String]
    /// `Live`, `Loading` or `Unloading`.
    public let state: String
    /// Core layout base address; 0 when hidden by kptr_restrict.
    public let address: UInt64
    /// Taint flags such as `(OE)`, without parentheses; empty when untainted.
    public let taints: String

    /// The module's core address range; nil when the address is hidden.
    public var range: Range<UInt64>? {
        guard address != 0 else { return nil }
        let (end, overflow) = address.addingReportingOverflow(size)
        return overflow ? nil : address..<end
    }
}

/// /proc/modules: `name size refcount deps, state address [(taints)]`.
public enum ModuleList {
    /// Parses the file's lines; a CRLF line end (a converted capture) counts as LF.
    public static func parse(_ text: String, source: String) throws(SymbolError) -> [LoadedModule] {
        var modules: [LoadedModule] = []
        // By bytes: in a Swift String "\r\n" is one Character, which splitting on "\n" would never find.
        for (number, bytes) in text.utf8.split(separator: 10, omittingEmptySubsequences: false).enumerated() {
            let raw = String(decoding: bytes.last == 13 ? bytes.dropLast() : bytes, as: UTF8.self)
            if raw.isEmpty { continue }
            let f = raw.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 6 else {
                throw .malformedModuleLine(source: source, line: number + 1, reason: "expected at least 6 fields, found \(f.count)")
            }
            guard let size = UInt64(f[1]), let users = Int(f[2]) else {
                throw .malformedModuleLine(source: source, line: number + 1, reason: "size and refcount must be numbers")
            }
            guard let address = Hex.parse(f[5]) else {
                throw .malformedModuleLine(source: source, line: number + 1, reason: "bad address \(f[5])")
            }
            let deps = f[3] == "-" ? [] : f[3].split(separator: ",").map(String.init)
            var taints = ""
            if f.count > 6 { taints = f[6...].joined(separator: " ").trimming("()") }
            modules.append(LoadedModule(name: String(f[0]), size: size, users: users, usedBy: deps,
                                        state: String(f[4]), address: address, taints: taints))
        }
        return modules
    }
}
