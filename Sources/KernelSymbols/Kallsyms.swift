import Glibc
import KreachSupport

/// A problem with /proc/kallsyms contents or with a symbol query.
public enum SymbolError: Error, CustomStringConvertible, Equatable, Sendable {
    /// A line that isn't `ADDRESS TYPE NAME[\t[MODULE]]`.
    case malformed(source: String, line: Int, reason: String)
    /// A /proc/modules line that isn't `NAME SIZE REFCOUNT DEPS STATE ADDRESS [(TAINTS)]`.
    case malformedModuleLine(source: String, line: Int, reason: String)
    /// No symbol at all: a kernel always has thousands, so the file is truncated or not kallsyms.
    case empty(source: String)
    /// Every address is zero: kptr_restrict or a missing CAP_SYSLOG hides them.
    case addressesHidden(source: String)
    case notFound(query: String, hint: String?)
    /// Several symbols match; the candidates and how to choose are in the message.
    case ambiguous(query: String, candidates: [KernelSymbol])
    case badQuery(query: String, reason: String)

    public var description: String {
        switch self {
        case let .malformed(source, line, reason):
            return "\(source):\(line): malformed kallsyms line: \(reason)"
        case let .malformedModuleLine(source, line, reason):
            return "\(source):\(line): malformed /proc/modules line: \(reason)"
        case let .empty(source):
            return "\(source): no symbols: kallsyms is empty (a truncated capture?); a kernel always lists thousands"
        case let .addressesHidden(source):
            return "\(source): every symbol address reads as 0: the kernel hides them (kernel.kptr_restrict, or no CAP_SYSLOG). "
                + "Run kreach as root (or with CAP_SYSLOG) and, if kernel.kptr_restrict is 2, lower it: sysctl -w kernel.kptr_restrict=1"
        case let .notFound(query, hint):
            return "no symbol matches \(query)" + (hint.map { ": \($0)" } ?? "")
        case .ambiguous:
            return description(.colon)
        case let .badQuery(query, reason):
            return "bad symbol query \(query): \(reason)"
        }
    }
}

/// How a message spells a module-qualified name: `lockd:nlm_blocked` (kreach's arguments) or
/// ``lockd`nlm_blocked`` (DTrace style: what bpftrace scripts need, and what every kreach argument also accepts).
public enum SymbolNotation: Sendable {
    case colon, backtick

    var separator: String { self == .colon ? ":" : "`" }
}

extension SymbolError {
    /// An ambiguity lists at most this many candidates (a name can be in kallsyms thousands of times).
    public static let listedCandidates = 50

    /// The message with names in `notation`: an ambiguity lists, per candidate, forms that pick it there.
    public func description(_ notation: SymbolNotation) -> String {
        guard case let .ambiguous(query, candidates) = self else { return description }
        let s = notation.separator
        let shown = notation == .colon ? query : query.replacingFirstColon(with: s)
        var text = "\(shown) is ambiguous: \(candidates.count) symbols match; choose one with MODULE\(s)NAME#N (Nth in kallsyms order) or MODULE\(s)NAME@ADDRESS"
        if notation == .colon { text += " (MODULE`NAME#N in bpftrace scripts)" }
        for c in candidates.prefix(SymbolError.listedCandidates) {
            text += "\n  \(Hex.address(c.address)) \(c.typeLetter) \(c.name)\t[\(c.moduleName)]   -> \(c.choosingForm(notation)) or \(c.addressForm(notation))"
        }
        if candidates.count > SymbolError.listedCandidates {
            text += "\n  … and \(candidates.count - SymbolError.listedCandidates) more (kreach sym --all lists every one)"
        }
        return text
    }
}

extension String {
    fileprivate func replacingFirstColon(with separator: String) -> String {
        guard let colon = firstIndex(of: ":") else { return self }
        return self[..<colon] + separator + self[index(after: colon)...]
    }
}

/// One line of /proc/kallsyms.
public struct KernelSymbol: Sendable, Equatable {
    public let address: UInt64
    /// The type letter as the kernel prints it (`T`, `t`, `d`, `b`, `r`, `A`, …).
    public let type: UInt8
    public let name: String
    /// nil for vmlinux; the module or pseudo-module (`bpf`, `__builtin__ftrace`) otherwise.
    public let module: String?
    /// 1-based position among the symbols with this module and name, in kallsyms order.
    public let ordinal: Int
    /// Index in the kallsyms table (-1 when the symbol came from a module's .ko instead).
    public let index: Int

    public init(address: UInt64, type: UInt8, name: String, module: String?, ordinal: Int, index: Int) {
        self.address = address
        self.type = type
        self.name = name
        self.module = module
        self.ordinal = ordinal
        self.index = index
    }

    public var typeLetter: String { String(UnicodeScalar(type)) }
    public var moduleName: String { module ?? "vmlinux" }
    /// Upper-case letters are global (exported to other objects), lower-case are local.
    public var isGlobal: Bool { type >= UInt8(ascii: "A") && type <= UInt8(ascii: "Z") }
    public var isText: Bool { type == UInt8(ascii: "T") || type == UInt8(ascii: "t") }
    /// Pseudo-modules: lines from BPF programs, ftrace and kprobe trampolines.
    public var isPseudoModule: Bool {
        guard let module else { return false }
        return module == "bpf" || module.hasPrefix("__builtin__")
    }

    /// What the letter means (nm's vocabulary).
    public var section: String {
        switch UnicodeScalar(type).properties.lowercaseMapping {
        case "t": return "text"
        case "d": return "data"
        case "b": return "bss"
        case "r": return "rodata"
        case "a": return "absolute"
        case "w", "v": return "weak"
        case "u": return "undefined"
        case "n": return "debug"
        case "c": return "common"
        case "g": return "small-data"
        case "s": return "small-bss"
        case "i": return "indirect"
        default: return "other"
        }
    }

    /// `mod:name#N` (or ``mod`name#N``), the form that picks exactly this symbol by position.
    public func choosingForm(_ notation: SymbolNotation = .colon) -> String { "\(moduleName)\(notation.separator)\(name)#\(ordinal)" }
    /// `mod:name@address` (or ``mod`name@address``), the form that picks exactly this symbol by address.
    public func addressForm(_ notation: SymbolNotation = .colon) -> String { "\(moduleName)\(notation.separator)\(name)@\(Hex.address(address))" }

    /// The name without compiler clone suffixes: `brd_alloc.isra.0.cold` -> `brd_alloc`.
    public var baseName: String { Kallsyms.baseName(of: name) }
    /// True for `.cold` fragments (the unlikely half of a function, not its entry).
    public var isColdFragment: Bool { name.hasSuffix(".cold") || name.contains(".cold.") }
}

/// The parsed /proc/kallsyms: one table indexed by name (with and without clone suffixes),
/// by module, and by address.
public final class Kallsyms {
    public let source: String
    let buffer: ByteBuffer
    let addresses: [UInt64]
    let nameStarts: [UInt32]
    let nameLengths: [UInt16]
    private(set) var letters: [UInt8]
    let moduleIndexes: [UInt16]
    /// Module names by index; index 0 is vmlinux (empty).
    public let moduleNames: [String]
    /// Open addressing on base-name hash, one slot per distinct base name: the index + 1 of its first symbol
    /// (in kallsyms order); 0 is empty.
    let slots: [UInt32]
    /// The next symbol (index + 1; 0 ends the chain) with the same base name, in kallsyms order: a name listed
    /// 100,000 times is one slot and one chain, so building and looking up stay linear.
    let nextSameBase: [UInt32]
    /// Each symbol's ordinal (`#N`), filled a whole base-name chain at a time on first use; 0 is not yet known.
    private var ordinals: [UInt32] = []
    let baseLengths: [UInt16]

    /// Longest name the kernel prints (KSYM_NAME_LEN is 512 since 6.1).
    public static let maxNameLength = 512

    public var count: Int { addresses.count }

    /// Parses kallsyms text. `source` names it in errors (a path).
    public convenience init(buffer: ByteBuffer, source: String) throws(SymbolError) {
        var builder = Builder(source: source, sizeHint: buffer.count)
        let p = buffer.pointer.assumingMemoryBound(to: UInt8.self)
        try builder.consume(p, upTo: buffer.count)
        try self.init(builder, buffer: buffer)
    }

    /// Reads and parses a kallsyms file.
    ///
    /// (Parsing while a background thread reads was tried: on the dev machine a read of /proc/kallsyms
    /// from a second thread took 46 ms against 36 ms on the main thread, more than the parse it would hide.)
    public convenience init(path: String) throws {
        try self.init(buffer: try ByteBuffer.read(path), source: path)
    }

    private init(_ b: Builder, buffer: ByteBuffer) throws(SymbolError) {
        if b.addresses.isEmpty { throw .empty(source: b.source) }
        if !b.anyNonZero { throw .addressesHidden(source: b.source) }
        guard b.position == buffer.count else {
            throw .malformed(source: b.source, line: b.line, reason: "internal: parsed \(b.position) of \(buffer.count) bytes")
        }
        self.source = b.source
        self.buffer = buffer
        self.addresses = b.addresses
        self.nameStarts = b.starts
        self.nameLengths = b.lengths
        self.letters = b.letters
        self.moduleIndexes = b.modIdx
        self.moduleNames = b.modules
        self.baseLengths = b.baseLens
        (self.slots, self.nextSameBase) = Kallsyms.buildIndex(b.hashes, b.baseLens, b.starts, buffer)
        self.letters = lettersCheckedAgainstSections()
    }

    /// The parse state: consumes whole lines, resumable as more bytes arrive.
    struct Builder {
        let source: String
        var addresses: [UInt64] = [], starts: [UInt32] = [], lengths: [UInt16] = [], letters: [UInt8] = []
        var modIdx: [UInt16] = [], baseLens: [UInt16] = []
        /// Hash of each base name, computed while the name is in cache.
        var hashes: [UInt32] = []
        var modules: [String] = [""]
        var moduleLookup: [String: UInt16] = [:]
        var lastModStart = -1, lastModLen = 0
        var lastModIndex: UInt16 = 0
        var anyNonZero = false
        /// Bytes consumed so far, and the number of the last line read.
        var position = 0
        var line = 0

        init(source: String, sizeHint: Int) {
            self.source = source
            let estimate = sizeHint / 30 + 16
            addresses.reserveCapacity(estimate); starts.reserveCapacity(estimate); lengths.reserveCapacity(estimate)
            letters.reserveCapacity(estimate); modIdx.reserveCapacity(estimate); baseLens.reserveCapacity(estimate)
            hashes.reserveCapacity(estimate)
        }

        /// Parses the lines in `p[position..<n]`; the last may lack its newline only at the end of the file.
        mutating func consume(_ p: UnsafePointer<UInt8>, upTo n: Int) throws(SymbolError) {
            guard n < Int(UInt32.max) else { throw .malformed(source: source, line: line, reason: "file larger than 4 GiB") }
            var i = position
            defer { position = min(i, n) }
            let hexValue = Kallsyms.hexValue
            while i < n {
                line += 1
                // The line: up to the next newline (or the end of the file), without the CR of a CRLF line end
                // (a capture converted by a Windows tool): names never end in CR.
                let newline: Int
                if let nl = memchr(p + i, 10, n - i) { newline = UnsafePointer<UInt8>(nl.assumingMemoryBound(to: UInt8.self)) - p } else { newline = n }
                let lineEnd = newline > i && p[newline - 1] == 13 ? newline - 1 : newline
                // Address: hex digits up to a space.
                var addr: UInt64 = 0
                var digits = 0
                // A 64-bit kernel's 16 digits, 8 at a time; else (8 digits, or an error) one at a time.
                if lineEnd - i > 16, p[i + 16] == 32, let value = Kallsyms.hex16(p + i) {
                    addr = value
                    digits = 16
                    i += 16
                } else {
                    while i < lineEnd {
                        let v = hexValue[Int(p[i])]
                        if v > 15 { break }
                        addr = addr << 4 | UInt64(v)
                        digits += 1
                        i += 1
                    }
                }
                guard digits > 0, digits <= 16, i + 2 < lineEnd, p[i] == 32 else {
                    throw .malformed(source: source, line: line, reason: digits > 16 ? "address longer than 16 hex digits" : "expected a hex address and a space")
                }
                let letter = p[i + 1]
                guard (letter >= 65 && letter <= 90) || (letter >= 97 && letter <= 122) || letter == 63, p[i + 2] == 32 else {
                    throw .malformed(source: source, line: line, reason: "expected a type letter between single spaces")
                }
                i += 3
                let nameStart = i
                if let tab = memchr(p + i, 9, lineEnd - i) { i = UnsafePointer<UInt8>(tab.assumingMemoryBound(to: UInt8.self)) - p } else { i = lineEnd }
                let nameLen = i - nameStart
                guard nameLen > 0, nameLen <= Kallsyms.maxNameLength else {
                    throw .malformed(source: source, line: line, reason: nameLen == 0 ? "empty symbol name" : "symbol name longer than \(Kallsyms.maxNameLength) bytes")
                }
                var module: UInt16 = 0
                if i < lineEnd {
                    // "\t[module]"
                    guard i + 1 < lineEnd, p[i + 1] == 91 else { throw .malformed(source: source, line: line, reason: "expected [module] after the tab") }
                    let ms = i + 2
                    var j = ms
                    while j < lineEnd && p[j] != 93 { j += 1 }
                    guard j < lineEnd, j > ms else { throw .malformed(source: source, line: line, reason: "unterminated or empty [module]") }
                    let ml = j - ms
                    if ml == lastModLen && lastModStart >= 0 && memcmp(p + ms, p + lastModStart, ml) == 0 {
                        module = lastModIndex
                    } else {
                        let name = String(decoding: UnsafeBufferPointer(start: p + ms, count: ml), as: UTF8.self)
                        if let known = moduleLookup[name] {
                            module = known
                        } else {
                            guard modules.count < Int(UInt16.max) else { throw .malformed(source: source, line: line, reason: "too many modules") }
                            module = UInt16(modules.count)
                            moduleLookup[name] = module
                            modules.append(name)
                        }
                        lastModStart = ms; lastModLen = ml; lastModIndex = module
                    }
                    i = j + 1
                    while i < lineEnd && p[i] == 32 { i += 1 }  // tolerate trailing blanks
                    guard i == lineEnd else { throw .malformed(source: source, line: line, reason: "unexpected text after the module") }
                }
                i = newline + 1
                if addr != 0 { anyNonZero = true }
                addresses.append(addr)
                starts.append(UInt32(nameStart))
                lengths.append(UInt16(nameLen))
                letters.append(letter)
                modIdx.append(module)
                var baseLen = nameLen
                if let dot = memchr(p + nameStart, 46, nameLen) {
                    baseLen = Kallsyms.baseLength(p + nameStart, nameLen, UnsafePointer<UInt8>(dot.assumingMemoryBound(to: UInt8.self)) - p - nameStart)
                }
                baseLens.append(UInt16(baseLen))
                hashes.append(UInt32(truncatingIfNeeded: Kallsyms.hash(p + nameStart, baseLen)))
            }
        }
    }

    // MARK: - Names

    /// Suffix words compilers add to clones and fragments (GCC: isra, constprop, part, cold; clang/LTO: llvm, lto_priv).
    static let cloneWords: Set<String> = ["isra", "constprop", "part", "cold", "llvm", "lto_priv", "localalias"]

    /// Length of the base name when everything after the first dot is clone suffixes and numbers.
    static func baseLength(_ p: UnsafePointer<UInt8>, _ length: Int, _ dot: Int) -> Int {
        var k = dot
        while k < length {
            // p[k] is '.'; read the next component.
            var e = k + 1
            while e < length && p[e] != 46 { e += 1 }
            let component = UnsafeBufferPointer(start: p + k + 1, count: e - k - 1)
            let isNumber = !component.isEmpty && component.allSatisfy { $0 >= 48 && $0 <= 57 }
            if !isNumber && !cloneWords.contains(String(decoding: component, as: UTF8.self)) { return length }
            k = e
        }
        return dot
    }

    /// `brd_alloc.isra.0.cold` -> `brd_alloc`; names without clone suffixes are returned unchanged.
    public static func baseName(of name: String) -> String {
        var bytes = Array(name.utf8)
        guard let dot = bytes.firstIndex(of: 46) else { return name }
        let len = bytes.withUnsafeMutableBufferPointer { buf -> Int in
            guard let base = buf.baseAddress else { return buf.count }
            return baseLength(UnsafePointer(base), buf.count, dot)
        }
        return String(decoding: bytes[0..<len], as: UTF8.self)
    }

    /// Hex digit values, 0xFF for other bytes.
    static let hexValue: [UInt8] = {
        var t = [UInt8](repeating: 0xFF, count: 256)
        for (k, c) in "0123456789abcdef".utf8.enumerated() { t[Int(c)] = UInt8(k) }
        for (k, c) in "ABCDEF".utf8.enumerated() { t[Int(c)] = UInt8(10 + k) }
        return t
    }()

    /// The value of the 16 hex digits (either case) at `p`, nil if a byte is not one.
    @inline(__always)
    static func hex16(_ p: UnsafePointer<UInt8>) -> UInt64? {
        let raw = UnsafeRawPointer(p)
        guard let high = hex8(UInt64(littleEndian: raw.loadUnaligned(as: UInt64.self))),
              let low = hex8(UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self))) else { return nil }
        return high << 32 | low
    }

    /// The value of 8 ASCII hex digits packed in `w` (the first, most significant, in the lowest byte),
    /// nil if a byte is not one. Byte-parallel: a byte's top bit after adding 0x80 - lo is set when the
    /// byte is >= lo (bytes are below 0x80 by then, so no carry crosses into the next byte).
    @inline(__always)
    static func hex8(_ w: UInt64) -> UInt64? {
        let ones: UInt64 = 0x0101_0101_0101_0101
        let tops = ones &* 0x80
        guard w & tops == 0 else { return nil }
        func atLeast(_ x: UInt64, _ lo: UInt64) -> UInt64 { (x &+ ones &* (0x80 - lo)) & tops }
        let lower = w | ones &* 0x20  // 'A'-'F' -> 'a'-'f'; only they land in 'a'-'f'
        let digit = atLeast(w, 0x30) & ~atLeast(w, 0x3A)
        let letter = atLeast(lower, 0x61) & ~atLeast(lower, 0x67)
        guard digit | letter == tops else { return nil }
        // Each byte's value ('0'-'9' -> 0-9, 'a'-'f' -> 10-15), then pairs, quads and the 8 combined.
        var n = (lower & (ones &* 0x0F)) &+ ((lower >> 6) & ones) &* 9
        n = (n & 0x0F00_0F00_0F00_0F00) >> 8 | (n & 0x000F_000F_000F_000F) << 4
        n = (n & 0x00FF_0000_00FF_0000) >> 16 | (n & 0x0000_00FF_0000_00FF) << 8
        return (n & 0x0000_FFFF_0000_0000) >> 32 | (n & 0x0000_0000_0000_FFFF) << 16
    }

    /// Hash of `length` bytes, 8 at a time.
    @inline(__always)
    static func hash(_ p: UnsafePointer<UInt8>, _ length: Int) -> UInt64 {
        var h: UInt64 = 0x243F_6A88_85A3_08D3 ^ UInt64(length)
        let raw = UnsafeRawPointer(p)
        var k = 0
        while length - k >= 8 {
            h = (h ^ UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: k, as: UInt64.self))) &* 0x9E37_79B9_7F4A_7C15
            h ^= h >> 29
            k += 8
        }
        var w: UInt64 = 0, shift: UInt64 = 0
        while k < length {
            w |= UInt64(p[k]) << shift
            shift += 8
            k += 1
        }
        h = (h ^ w) &* 0x9E37_79B9_7F4A_7C15
        return h ^ (h >> 32)
    }

    /// The base-name index: a slot per distinct base name and the chains of symbols sharing one.
    private static func buildIndex(_ hashes: [UInt32], _ lengths: [UInt16], _ starts: [UInt32], _ buffer: ByteBuffer) -> ([UInt32], [UInt32]) {
        var capacity = 16
        while capacity < hashes.count * 2 { capacity <<= 1 }
        let mask = capacity - 1
        var slots = [UInt32](repeating: 0, count: capacity)
        var next = [UInt32](repeating: 0, count: hashes.count)
        let p = buffer.pointer
        slots.withUnsafeMutableBufferPointer { table in
            hashes.withUnsafeBufferPointer { hs in
                // Last symbol first, each put before its chain's head: chains come out in kallsyms order
                // without a table of tails (a megabyte to fault in and clear).
                insert: for k in stride(from: hs.count - 1, through: 0, by: -1) {
                    var slot = Int(hs[k]) & mask
                    while table[slot] != 0 {
                        let head = Int(table[slot] - 1)
                        if hs[head] == hs[k] && lengths[head] == lengths[k]
                            && memcmp(p + Int(starts[head]), p + Int(starts[k]), Int(lengths[k])) == 0 {
                            next[k] = table[slot]
                            table[slot] = UInt32(k + 1)
                            continue insert
                        }
                        slot = (slot + 1) & mask
                    }
                    table[slot] = UInt32(k + 1)
                }
            }
        }
        return (slots, next)
    }

    /// The symbol at table index `i`.
    public func symbol(_ i: Int) -> KernelSymbol {
        let m = Int(moduleIndexes[i])
        return KernelSymbol(address: addresses[i], type: letters[i], name: name(i),
                            module: m == 0 ? nil : moduleNames[m], ordinal: ordinal(i), index: i)
    }

    public func name(_ i: Int) -> String {
        String(decoding: UnsafeRawBufferPointer(start: buffer.pointer + Int(nameStarts[i]), count: Int(nameLengths[i])), as: UTF8.self)
    }

    public func module(_ i: Int) -> String? {
        let m = Int(moduleIndexes[i])
        return m == 0 ? nil : moduleNames[m]
    }

    public func address(_ i: Int) -> UInt64 { addresses[i] }

    /// The type letter of symbol `i` (ASCII), without building the whole symbol (its ordinal costs a lookup).
    public func typeLetter(_ i: Int) -> UInt8 { letters[i] }

    /// Position among symbols with the same module and exact name. The first call for a base name numbers its
    /// whole chain in one pass, so numbering every symbol (a glob, an ambiguity) stays linear.
    private func ordinal(_ i: Int) -> Int {
        if ordinals.isEmpty { ordinals = [UInt32](repeating: 0, count: count) }
        if ordinals[i] == 0 {
            struct Key: Hashable { let module: UInt16; let name: String }
            var counts: [Key: UInt32] = [:]
            for k in indexes(baseOf: name(i)) {
                let key = Key(module: moduleIndexes[k], name: name(k))
                let n = (counts[key] ?? 0) + 1
                counts[key] = n
                ordinals[k] = n
            }
            if ordinals[i] == 0 { ordinals[i] = 1 }  // a name with an empty base (".L1") is in no chain
        }
        return Int(ordinals[i])
    }

    /// Table indexes of every symbol whose base name is `base`'s base name, in kallsyms order.
    public func indexes(baseOf query: String) -> [Int] {
        let base = Array(Kallsyms.baseName(of: query).utf8)
        guard !base.isEmpty else { return [] }
        let mask = slots.count - 1
        let h = base.withUnsafeBufferPointer { b in b.baseAddress.map { Kallsyms.hash($0, b.count) } ?? 0 }
        var slot = Int(UInt32(truncatingIfNeeded: h)) & mask
        while slots[slot] != 0 {
            let head = Int(slots[slot] - 1)
            if Int(baseLengths[head]) == base.count, equalBytes(head, base) {
                // The chain, already in kallsyms order.
                var found = [head]
                var k = nextSameBase[head]
                while k != 0 {
                    found.append(Int(k - 1))
                    k = nextSameBase[Int(k - 1)]
                }
                return found
            }
            slot = (slot + 1) & mask
        }
        return []
    }

    /// Table indexes of symbols named exactly `name` (optionally only in `module`; "vmlinux" for the kernel).
    public func indexes(named name: String, module: String? = nil) -> [Int] {
        let wanted = Array(name.utf8)
        return indexes(baseOf: name).filter { k in
            guard Int(nameLengths[k]) == wanted.count, equalBytes(k, wanted) else { return false }
            return module.map { inModule(k, $0) } ?? true
        }
    }

    /// Whether symbol `k`'s name starts with `bytes`.
    private func equalBytes(_ k: Int, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { q in
            guard let qb = q.baseAddress else { return true }
            return memcmp(buffer.pointer + Int(nameStarts[k]), qb, q.count) == 0
        }
    }

    func inModule(_ k: Int, _ module: String) -> Bool {
        let m = Int(moduleIndexes[k])
        return module == "vmlinux" ? m == 0 : (m != 0 && moduleNames[m] == module)
    }

    /// Every symbol whose name matches `glob` (and whose module matches `moduleGlob`, when given).
    public func indexes(matching glob: Glob, module moduleGlob: Glob? = nil) -> [Int] {
        var found: [Int] = []
        var moduleMatches = [Bool](repeating: true, count: moduleNames.count)
        if let moduleGlob {
            for (m, name) in moduleNames.enumerated() { moduleMatches[m] = moduleGlob.matches(m == 0 ? "vmlinux" : name) }
        }
        let p = buffer.pointer.assumingMemoryBound(to: UInt8.self)
        for k in 0..<count where moduleMatches[Int(moduleIndexes[k])] {
            if glob.matches(UnsafeBufferPointer(start: p + Int(nameStarts[k]), count: Int(nameLengths[k]))) { found.append(k) }
        }
        return found
    }

    // MARK: - Addresses

    /// Symbol indexes sorted by address, without absolute (`A`/`a`) and undefined (`U`) symbols,
    /// which are offsets or placeholders rather than places in memory.
    private lazy var byAddress: [Int] = {
        var order = (0..<count).filter { k in
            let l = letters[k]
            return l != 65 && l != 97 && l != 85 && addresses[k] != 0
        }
        order.sort { addresses[$0] < addresses[$1] || (addresses[$0] == addresses[$1] && $0 < $1) }
        return order
    }()

    /// The symbol at or below `address`, with the offset into it.
    /// `moduleRanges` (from /proc/modules) keeps an address inside a module from matching another object's symbol.
    public func nearest(to address: UInt64, moduleRanges: [String: Range<UInt64>] = [:]) -> (index: Int, offset: UInt64)? {
        let order = byAddress
        var lo = 0, hi = order.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if addresses[order[mid]] <= address { lo = mid + 1 } else { hi = mid }
        }
        guard lo > 0 else { return nil }
        var pick = lo - 1
        // Among symbols at the same address, prefer the first in kallsyms order (aliases like _stext/_text).
        while pick > 0 && addresses[order[pick - 1]] == addresses[order[pick]] { pick -= 1 }
        let k = order[pick]
        // Since 6.4 /proc/modules gives the text base and the size of all the module's memory regions, which
        // lie apart: ranges built from it can overlap. An address inside several is its owner's if one is.
        let containing = Set(moduleRanges.filter { $0.value.contains(address) }.keys)
        let owner = module(k)
        if !containing.isEmpty && !containing.contains(owner ?? "") { return nil }
        if containing.isEmpty, let owner, let range = moduleRanges[owner], !range.contains(address) { return nil }
        if owner == nil, let end = vmlinuxEnd, address >= end { return nil }
        return (k, address - addresses[k])
    }

    /// The lowest symbol address above `address` (absolute and undefined symbols aside).
    public func nextAddress(after address: UInt64) -> UInt64? {
        let order = byAddress
        var lo = 0, hi = order.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if addresses[order[mid]] <= address { lo = mid + 1 } else { hi = mid }
        }
        return lo < order.count ? addresses[order[lo]] : nil
    }

    /// `_end` of vmlinux, when kallsyms lists it (CONFIG_KALLSYMS_ALL).
    private lazy var vmlinuxEnd: UInt64? = indexes(named: "_end", module: "vmlinux").first.map { addresses[$0] }
}
