import KreachSupport

/// A parsed symbol query, as `kreach sym` and expressions accept it.
///
/// Forms:
/// - `NAME` — exact name; when none matches, clones (`NAME.isra.0`, `NAME.constprop.1`, …) of it;
/// - `MODULE:NAME` — only in MODULE (`vmlinux:NAME` for the kernel image); ``MODULE`NAME`` and `` `NAME `` too;
/// - `…NAME#N` — the Nth symbol with that module and name, in kallsyms order (1-based);
/// - `…NAME@ADDRESS` — the symbol with that name at ADDRESS (hex);
/// - globs (`nlm_*`, `lockd:*`, `*:nlm_blocked`) — every match;
/// - `0xADDRESS` or 16 hex digits — the symbol at or below the address.
public enum SymbolQuery: Equatable, Sendable {
    case name(module: String?, name: String, ordinal: Int?, address: UInt64?)
    case glob(module: String?, pattern: String)
    case address(UInt64)

    public static func parse(_ text: String) throws(SymbolError) -> SymbolQuery {
        guard !text.isEmpty else { throw .badQuery(query: text, reason: "empty") }
        // DTrace style, as in scripts: mod`name, `name (vmlinux).
        if let tick = text.firstIndex(of: "`") {
            let module = tick == text.startIndex ? "vmlinux" : String(text[..<tick])
            guard !module.contains(":") else { throw .badQuery(query: text, reason: "both ':' and '`'") }
            return try parse(module + ":" + text[text.index(after: tick)...])
        }
        if text.hasPrefix("0x") || text.hasPrefix("0X") || (text.count == 16 && text.allSatisfy(\.isHexDigit)) {
            guard let a = Hex.parse(Substring(text)) else { throw .badQuery(query: text, reason: "not a hex address") }
            return .address(a)
        }
        var module: String?
        var rest = Substring(text)
        if let colon = rest.firstIndex(of: ":") {
            module = String(rest[..<colon])
            rest = rest[rest.index(after: colon)...]
            guard let m = module, !m.isEmpty, !rest.isEmpty else {
                throw .badQuery(query: text, reason: "expected MODULE:NAME")
            }
            guard !rest.contains(":") else { throw .badQuery(query: text, reason: "more than one ':'") }
        }
        if Glob.isPattern(String(rest)) || (module.map(Glob.isPattern) ?? false) {
            return .glob(module: module, pattern: String(rest))
        }
        if let hash = rest.firstIndex(of: "#") {
            let number = rest[rest.index(after: hash)...]
            guard let n = Int(number), n >= 1 else { throw .badQuery(query: text, reason: "#N needs a position from 1 up") }
            return .name(module: module, name: String(rest[..<hash]), ordinal: n, address: nil)
        }
        if let at = rest.firstIndex(of: "@") {
            guard let a = Hex.parse(rest[rest.index(after: at)...]) else {
                throw .badQuery(query: text, reason: "@ADDRESS needs a hex address")
            }
            return .name(module: module, name: String(rest[..<at]), ordinal: nil, address: a)
        }
        return .name(module: module, name: String(rest), ordinal: nil, address: nil)
    }
}

/// kallsyms plus /proc/modules: answers symbol queries, never picking silently among several matches.
public final class SymbolTable {
    public let kallsyms: Kallsyms
    public let modules: [LoadedModule]
    public let moduleRanges: [String: Range<UInt64>]

    public init(kallsyms: Kallsyms, modules: [LoadedModule]) {
        self.kallsyms = kallsyms
        self.modules = modules
        var ranges: [String: Range<UInt64>] = [:]
        for m in modules { if let r = m.range { ranges[m.name] = r } }
        self.moduleRanges = ranges
    }

    /// Every symbol a query names: all matches of a glob, all candidates of a name (exact first, clones
    /// when there is no exact match), the nearest symbol for an address.
    public func find(_ query: SymbolQuery) -> [KernelSymbol] {
        switch query {
        case .address(let a):
            guard let (k, _) = kallsyms.nearest(to: a, moduleRanges: moduleRanges) else { return [] }
            return [kallsyms.symbol(k)]
        case let .glob(module, pattern):
            return kallsyms.indexes(matching: Glob(pattern), module: module.map(Glob.init)).map(kallsyms.symbol)
        case let .name(module, name, ordinal, address):
            var candidates = kallsyms.indexes(named: name, module: module).map(kallsyms.symbol)
            if candidates.isEmpty {
                candidates = kallsyms.indexes(baseOf: name)
                    .filter { k in module.map { m in kallsyms.inModule(k, m) } ?? true }
                    .map(kallsyms.symbol)
                    .filter { $0.baseName == name }
            }
            if let ordinal { candidates = candidates.filter { $0.ordinal == ordinal && $0.name == name } }
            if let address { candidates = candidates.filter { $0.address == address } }
            return candidates
        }
    }

    /// Exactly one symbol for a name query; an error that lists candidates when there are several.
    ///
    /// With no exact match, a single clone is accepted (`brd_alloc` -> `brd_alloc.isra.0`), `.cold`
    /// fragments aside; the returned symbol's name says which one it is.
    public func resolve(_ text: String) throws(SymbolError) -> KernelSymbol {
        let query = try SymbolQuery.parse(text)
        if case .glob = query { throw .badQuery(query: text, reason: "a glob names many symbols; give one name") }
        return try resolve(query, text: text)
    }

    /// The symbol a global names (errors quote it as `mod:name#N`).
    public func resolve(_ global: GlobalName) throws(SymbolError) -> KernelSymbol {
        try resolve(global.query, text: global.description)
    }

    /// `query`, parsed from `text` (which errors quote).
    public func resolve(_ query: SymbolQuery, text: String) throws(SymbolError) -> KernelSymbol {
        var found = find(query)
        if found.count > 1, found.contains(where: { $0.name != Kallsyms.baseName(of: $0.name) }) {
            let entries = found.filter { !$0.isColdFragment }
            if !entries.isEmpty { found = entries }
        }
        switch found.count {
        case 1: return found[0]
        case 0: throw .notFound(query: text, hint: hint(for: query))
        default: throw .ambiguous(query: text, candidates: found)
        }
    }

    /// A nearest-symbol description: `name+0x1f [module]`.
    public func describe(address: UInt64) -> String? {
        guard let (k, off) = kallsyms.nearest(to: address, moduleRanges: moduleRanges) else { return nil }
        let s = kallsyms.symbol(k)
        return s.name + (off == 0 ? "" : "+" + Hex.short(off)) + (s.module.map { " [\($0)]" } ?? "")
    }

    private func hint(for query: SymbolQuery) -> String? {
        switch query {
        case let .name(module, name, ordinal, address):
            if let module, module != "vmlinux", !kallsyms.moduleNames.contains(module) {
                return "module \(module) is not loaded (or has no symbols)"
            }
            if ordinal != nil || address != nil {
                let same = kallsyms.indexes(named: name, module: module)
                if !same.isEmpty {
                    let forms = same.map { kallsyms.symbol($0) }.map { ordinal != nil ? "#\($0.ordinal)" : "@" + Hex.address($0.address) }
                    return "\(same.count) symbol\(same.count == 1 ? "" : "s") named \(name)\(module.map { " in \($0)" } ?? ""): \(forms.prefix(8).joined(separator: ", "))\(same.count > 8 ? ", …" : "")"
                }
            }
            if module != nil, !kallsyms.indexes(named: name).isEmpty {
                let where_ = Set(kallsyms.indexes(named: name).map { kallsyms.module($0) ?? "vmlinux" }).sorted()
                return "\(name) exists in \(where_.joined(separator: ", "))"
            }
            return nil
        case .address:
            return "no symbol at or below this address (or it lies outside every module and vmlinux)"
        case .glob:
            return nil
        }
    }
}

/// A global as an expression names it, parsed once: `[MODULE:]NAME[#N|@ADDR]` (or ``MODULE`NAME``,
/// `` `NAME `` for vmlinux). `module` is nil when the name is unqualified.
public struct GlobalName: Equatable, Sendable, CustomStringConvertible {
    /// Which of several same-named symbols: the Nth in kallsyms order, or the one at an address.
    public enum Chooser: Equatable, Sendable {
        case ordinal(Int)
        case address(UInt64)
    }

    public var module: String?
    public var name: String
    public var chooser: Chooser?

    public init(module: String?, name: String, chooser: Chooser? = nil) {
        self.module = module
        self.name = name
        self.chooser = chooser
    }

    /// Parses a symbol query that names one global (globs and bare addresses are refused).
    public init(parsing text: String) throws(SymbolError) {
        guard case let .name(module, name, ordinal, address) = try SymbolQuery.parse(text) else {
            throw .badQuery(query: text, reason: "expected a global's name")
        }
        self.init(module: module, name: name, chooser: ordinal.map { .ordinal($0) } ?? address.map { .address($0) })
    }

    public var query: SymbolQuery {
        if case .ordinal(let n) = chooser { return .name(module: module, name: name, ordinal: n, address: nil) }
        if case .address(let a) = chooser { return .name(module: module, name: name, ordinal: nil, address: a) }
        return .name(module: module, name: name, ordinal: nil, address: nil)
    }

    /// A module (not vmlinux) and a plain name, no chooser: a global the module's .ko can place.
    public var inModule: (module: String, name: String)? {
        guard let module, module != "vmlinux", chooser == nil, !Glob.isPattern(module), !Glob.isPattern(name) else { return nil }
        return (module, name)
    }

    /// `mod:name#N`, the query text `SymbolTable.resolve` reads.
    public var description: String {
        var text = (module.map { $0 + ":" } ?? "") + name
        switch chooser {
        case .ordinal(let n): text += "#\(n)"
        case .address(let a): text += "@0x" + String(a, radix: 16)
        case nil: break
        }
        return text
    }
}
