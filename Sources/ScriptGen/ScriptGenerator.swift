import BTF
import KernelObject
import KernelSource
import KernelSymbols
import KreachSupport

/// An error in a user's script, at FILE:LINE:COL, shown with the line and a caret.
public struct ScriptError: Error, CustomStringConvertible {
    public let file: String
    public let line: Int
    public let column: Int
    public let width: Int
    public let message: String
    public let sourceLine: String

    /// The first line of `message`, the source line and a caret, then the rest of `message` (an ambiguity's candidates).
    public var description: String {
        let (shown, caret) = Terminal.caretLines(Array(sourceLine), (column - 1)..<(column - 1 + max(1, width)))
        var first = Substring(message), rest = ""
        if let nl = message.firstIndex(of: "\n") {
            first = message[..<nl]
            rest = String(message[nl...])
        }
        return "\(file):\(line):\(column): \(first)\n  \(shown)\n  \(caret)" + rest
    }
}

/// One expression around a kernel global named in a script (``mod`name`` or `` `name ``): the global with
/// the casts, `&`, `*`, `-`, parentheses, `.member`, `->member` and `[index]` around it that kreach resolves.
struct GlobalReference {
    /// Character range in the script of the whole expression.
    let range: Range<Int>
    /// The expression's text, as written (kreach's parser reads mod`name and `name).
    let expression: String
    /// Ranges in `expression` that are bpftrace's own (an index such as `$i`): `Expr.opaque` for the resolver.
    let opaque: [Range<Int>]
    /// A bpftrace integer cast right before it, e.g. `uint64` in `(uint64)brd`rd_size`: the width of an
    /// untyped global (the cast itself stays in the script).
    let castBefore: String?
    let module: String?
}

/// Expands a bpftrace script that names kernel globals DTrace-style into plain bpftrace.
///
/// Each ``mod`var`` (or `` `var `` for vmlinux), with the expression around it that kreach understands
/// (casts to struct and pointer types, `&`, `*`, `-`, `.member`, `->member`, `[index]`, per_cpu, current),
/// is resolved now by the memory-free `Resolver` and printed as plain bpftrace with typed absolute reads:
/// `(*(uint32 *)0xffffffffc05740d8)`, loads through pointers nested, `(*(uint32 *)((*(uint64 *)0x…) + 0x18))`.
/// Lines are kept where they are (additions go at the end), so bpftrace's own line numbers still point into
/// the user's script. Scripts that use module globals get an unload guard: a probe on the
/// `module:module_free` tracepoint that exits before the script can read freed memory. Module structs
/// the script names get C definitions (bpftrace knows only vmlinux BTF), on the first code line.
public final class ScriptGenerator {
    let resolver: Resolver
    let kernel: Kernel
    /// Notes for stderr (no unload guard available, …).
    public internal(set) var notes: [String] = []
    /// Walk statements (bounded loops) in the last script expanded.
    public private(set) var walkCount = 0

    /// Builds `@kreach.capture(FUNC[, NAME])` directives; nil refuses them.
    let capture: CaptureBuilder?

    public init(kernel: Kernel, capture: CaptureBuilder? = nil) throws {
        self.kernel = kernel
        self.resolver = Resolver(kernel: kernel, types: try kernel.types())
        self.capture = capture
    }

    /// Replaces each top-level `@kreach.capture(FUNC[, NAME])` with the capture probe (on the same line).
    func expandCaptures(_ script: String, file: String) throws -> String {
        let directive = "@kreach.capture("
        guard script.contains(directive) else { return script }
        let chars = Array(script)
        var out = ""
        var i = 0
        let d = Array(directive)
        while i < chars.count {
            if chars[i] == "@", i + d.count <= chars.count, Array(chars[i..<(i + d.count)]) == d {
                var j = i + d.count
                while j < chars.count && chars[j] != ")" && chars[j] != "\n" { j += 1 }
                guard j < chars.count, chars[j] == ")" else {
                    throw ScriptScanner.error("unterminated @kreach.capture(", at: i..<(i + d.count), chars: chars, file: file)
                }
                let args = String(chars[(i + d.count)..<j]).split(separator: ",").map { String($0).trimming() }
                guard let capture, let function = args.first, !function.isEmpty, args.count <= 2 else {
                    throw ScriptScanner.error("@kreach.capture(FUNC[, NAME]) needs a function name", at: i..<(j + 1), chars: chars, file: file)
                }
                do {
                    let result = try capture.build(function: function, name: args.count > 1 ? args[1] : nil, arg: nil)
                    notes += result.notes
                    out += result.snippet
                } catch {
                    throw ScriptScanner.error("\(error)", at: i..<(j + 1), chars: chars, file: file)
                }
                i = j + 1
                continue
            }
            out.append(chars[i])
            i += 1
        }
        return out
    }

    /// bpftrace's integer type for a size and signedness.
    static func integerType(size: Int, signed: Bool) -> String? {
        guard [1, 2, 4, 8].contains(size) else { return nil }
        return (signed ? "int" : "uint") + String(size * 8)
    }

    static let bpftraceIntegers: [String: (Int, Bool)] = [
        "int8": (1, true), "int16": (2, true), "int32": (4, true), "int64": (8, true),
        "uint8": (1, false), "uint16": (2, false), "uint32": (4, false), "uint64": (8, false),
    ]

    public func expand(_ original: String, file: String) throws -> String {
        // CRLF line ends (one Character in Swift) become LF, so comments end and line numbers count as bpftrace's do.
        let unix = original.contains("\r\n") ? String(original.map { $0 == "\r\n" ? "\n" : $0 }) : original
        let script = try expandCaptures(unix, file: file)
        let chars = Array(script)
        let (refs, walks) = try ScriptScanner(chars: chars, file: file).scan()
        walkCount = walks.count
        // Each reference, and each walk's header and closing brace, replaced in the script's order.
        var edits: [(range: Range<Int>, text: String)] = []
        var modules: [String] = []
        for ref in refs {
            edits.append((ref.range, try replacement(for: ref, chars: chars, file: file)))
            if let m = ref.module, !modules.contains(m) { modules.append(m) }
        }
        for (k, walk) in walks.enumerated() {
            let enclosing = walks.filter { $0.header.upperBound <= walk.start && $0.close > walk.start && $0.arguments.count >= 4 }
                .map { (variable: String(chars[$0.arguments[3]]), type: String(chars[$0.arguments[0]])) }
            let (header, after, module) = try expandWalk(walk, number: k + 1, enclosing: enclosing.reversed(), chars: chars, file: file)
            edits.append((walk.header, header))
            edits.append((walk.close..<(walk.close + 1), "}" + after))
            if let m = module, m != "vmlinux", !modules.contains(m) { modules.append(m) }
        }
        var out = ""
        var last = 0
        for edit in edits.sorted(by: { $0.range.lowerBound < $1.range.lowerBound }) {
            out += String(chars[last..<edit.range.lowerBound])
            out += edit.text
            last = edit.range.upperBound
        }
        out += String(chars[last...])
        if !modules.isEmpty { out = try addGuard(out, modules) }
        return try addDefinitions(out, modules: modules)
    }

    /// Prepends C definitions of module types the script names (bpftrace 0.17 knows only vmlinux BTF)
    /// to the first line that isn't a preprocessor line, so every line keeps its number.
    func addDefinitions(_ script: String, modules: [String]) throws -> String {
        var writer = CDefinitionWriter(types: resolver.types)
        notes += try writer.defineNamedIn(script, preferring: modules)
        guard !writer.definitions.isEmpty else { return script }
        var lines = script.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let at = lines.firstIndex { !$0.hasPrefix("#") } ?? 0
        lines[at] = writer.definitions.joined(separator: " ") + " " + lines[at]
        return lines.joined(separator: "\n")
    }

    func error(_ message: String, _ ref: GlobalReference, _ chars: [Character], _ file: String) -> ScriptError {
        ScriptScanner.error(message, at: ref.range, chars: chars, file: file)
    }

    /// An error resolving `ref`, at its node in the script when it says where.
    func scriptError(_ e: ExpressionError, _ ref: GlobalReference, _ chars: [Character], _ file: String) -> ScriptError {
        guard case let .at(message, _, range) = e else { return error(e.message, ref, chars, file) }
        let r = (ref.range.lowerBound + range.lowerBound)..<(ref.range.lowerBound + max(range.upperBound, range.lowerBound + 1))
        return ScriptScanner.error(message, at: r.clamped(to: ref.range), chars: chars, file: file)
    }

    func replacement(for ref: GlobalReference, chars: [Character], file: String) throws -> String {
        let source = ref.expression
        let r: Resolved
        let expr: Expr
        resolver.clearWarnings()
        do {
            // Syntax errors point at the reference (the scanner chose its extent); resolution errors at their node.
            do {
                expr = try ExpressionParser.parse(source, isTypeName: { [resolver] in resolver.isTypeName($0) }, opaque: ref.opaque)
            } catch {
                throw self.error(error.message, ref, chars, file)
            }
            if case let .container(helper, _, _, _, _, _) = expr {
                throw error(ScriptChain(helper) == nil ? ScriptChain.showOnly(helper)
                            : "\(helper.macro) is a statement in a script: \(helper.macro)(TYPE, HEAD, MEMBER, $VAR[, MAX]) { ... }", ref, chars, file)
            }
            r = try resolver.resolve(expr, source)
        } catch let e as ScriptError {
            throw e
        } catch let e as ExpressionError {
            throw scriptError(e, ref, chars, file)
        }
        notes += resolver.warnings.filter { !notes.contains($0) }
        do {
            return try print(r, ref, expr)
        } catch let e as ExpressionError {
            throw scriptError(e, ref, chars, file)
        }
    }

    /// `r` as bpftrace text.
    func print(_ r: Resolved, _ ref: GlobalReference, _ expr: Expr) throws -> String {
        let source = ref.expression
        let whole = 0..<source.count
        func fail(_ message: String) -> ExpressionError { .at(message, source: source, range: whole) }
        let type = try r.type.resolved()
        if case .untyped(let size) = type {
            guard let place = r.place, let g = r.global else { throw fail("\(source) has no known type") }
            // A bpftrace integer cast right before the global says how to read it.
            if let cast = ref.castBefore, let (castSize, signed) = ScriptGenerator.bpftraceIntegers[cast] {
                if size > 0 && size != castSize && size != 8 {
                    notes.append("\(source) is \(size) bytes but is read as \(cast)")
                }
                // A module parameter without its .ko: its type is in struct module's table, in memory, which gen never reads.
                if g.needsParameterTable, let module = g.symbol.module,
                   FileBytes.exists(kernel.path(.moduleDirectory) + "/\(module)/parameters/\(g.symbol.name)") {
                    notes.append("\(source) is a parameter of \(module): its C type comes from \(module)'s .ko, not found here (kreach show can also read it from struct module in memory); the script reads it as \(cast)")
                }
                return ScriptGenerator.text(.load(place, size: castSize, signed: signed))
            }
            throw resolver.untypedError(g, expr, member: nil, source)
        }
        if r.bitfieldSize > 0 || r.value != nil || r.type.isScalar {
            let value = try resolver.rvalue(r, expr, source)
            if case .pointer(let target) = type, let (btf, t) = try target.record(), let spelled = ScriptGenerator.recordName(t) {
                // A typed pointer value; bpftrace follows '->' through its BTF (or kreach's C definitions).
                if btf.owner(of: t.id).objectName != "vmlinux" {
                    notes.append("\(source) points to \(spelled) from \(btf.owner(of: t.id).objectName)'s BTF, which bpftrace may not know; '->' on it may fail")
                }
                return "((\(spelled) *)\(ScriptGenerator.text(value)))"
            }
            return ScriptGenerator.text(value)
        }
        guard let place = r.place else { throw fail("\(source) has no address") }
        switch type {
        case let .array(element, count):
            if let (_, et) = try element.record(), et.kind == .int, et.size == 1 {
                return "str(\(ScriptGenerator.text(place)), \(count))"
            }
            throw fail("\(source) is an array (\(r.type.name)): index it, e.g. [0]")
        case let .btf(btf, id):
            let t = try btf.type(id)
            guard t.kind == .structure || t.kind == .union else {
                throw fail("\(source) is a \(r.type.name), which bpftrace can't read directly")
            }
            if btf.owner(of: id).objectName == "vmlinux", let spelled = ScriptGenerator.recordName(t) {
                return "(*(\(spelled) *)\(ScriptGenerator.text(place)))"
            }
            throw fail("\(source) is a \(r.type.name) from \(btf.owner(of: id).objectName)'s BTF: name one of its members (.member)")
        default:
            throw fail("\(source) is a \(r.type.name), which bpftrace can't read directly")
        }
    }

    /// `struct NAME` / `union NAME` as a bpftrace cast spells it (bpftrace 0.17 refuses `const` and typedef
    /// names there); nil for anonymous records and other kinds.
    static func recordName(_ t: BTFType) -> String? {
        guard !t.name.isEmpty, t.kind == .structure || t.kind == .union else { return nil }
        return (t.kind == .union ? "union " : "struct ") + t.name
    }

    /// A symbolic value as a bpftrace expression: constants in hex, every compound form parenthesized (so it
    /// can stand as an operand or an address anywhere).
    static func text(_ v: Value) -> String {
        switch v {
        case .constant(let c): return "0x" + String(c, radix: 16)
        case let .load(address, size, signed):
            return "(*(\(integerType(size: size, signed: signed) ?? "uint64") *)\(text(address)))"
        case let .add(a, b): return "(\(text(a)) + \(text(b)))"
        case let .scaled(a, n): return "(\(text(a)) * \(n))"
        case .negate(let a): return "(-\(text(a)))"
        case let .convert(a, size, signed): return "((\(integerType(size: size, signed: signed) ?? "uint64"))\(text(a)))"
        case let .bits(a, shift, width, signed):
            let mask = width >= 64 ? UInt64.max : (UInt64(1) << UInt64(width)) - 1
            let field = "((\(text(a)) >> \(shift)) & 0x\(String(mask, radix: 16)))"
            guard signed && width < 64 else { return field }
            // Sign extension without relying on shift semantics: (x ^ s) - s, s the field's sign bit.
            let sign = "0x" + String(UInt64(1) << UInt64(width - 1), radix: 16)
            return "((\(field) ^ \(sign)) - \(sign))"
        case .currentTask: return "((uint64)curtask)"
        case .opaque(let t): return "(\(t))"
        }
    }

    /// When set (by `kreach run`), a script with an unload guard prints this line from `BEGIN`, which bpftrace
    /// runs once every probe is attached, so the runner can check that no guarded module went away before
    /// the guard was in place (`modulesChangedSinceResolution`). The runner hides the line.
    public var attachMarker: String?
    /// The modules whose globals the script reads, as /proc/modules listed them when addresses were resolved.
    public private(set) var guardedModules: [LoadedModule] = []

    /// The unload guard, and the attach marker when asked for.
    func addGuard(_ script: String, _ modules: [String]) throws -> String {
        let loaded = try kernel.symbols().modules
        guardedModules = modules.compactMap { name in loaded.first { $0.name == name } }
        var out = script + guardProbe(modules)
        if let attachMarker {
            let marker = "printf(\"\(attachMarker)\\n\"); "
            if let body = ScriptGenerator.beginBody(out) {
                out.insert(contentsOf: marker, at: body)  // bpftrace allows one BEGIN: the marker goes first in it
            } else {
                out += "BEGIN { \(marker)}\n"
            }
        }
        return out
    }

    /// A guarded module that is gone or was loaded again elsewhere since the addresses were resolved: the
    /// message naming it, nil when all are where they were. Reads /proc/modules afresh.
    public func modulesChangedSinceResolution() throws -> String? {
        let now = try kernel.modules()
        for m in guardedModules {
            guard let same = now.first(where: { $0.name == m.name }) else {
                return "module \(m.name) was unloaded before the script's probes were attached; its globals are gone, exiting"
            }
            if same.address != m.address {
                return "module \(m.name) was loaded again at another address before the script's probes were attached; its globals moved, exiting"
            }
        }
        return nil
    }

    /// Where the body of the script's top-level `BEGIN` probe (`begin` in newer bpftrace) starts, just after
    /// its `{`, skipping comments and strings; nil when there is none.
    static func beginBody(_ script: String) -> String.Index? {
        var depth = 0
        var sawBegin = false  // BEGIN named in the probe header being read
        var i = script.startIndex
        while i < script.endIndex {
            let c = script[i]
            let rest = script[i...]
            if rest.hasPrefix("//") {
                i = rest.firstIndex(of: "\n") ?? script.endIndex
                continue
            }
            if rest.hasPrefix("/*") {
                i = rest.dropFirst(2).firstRange(of: "*/")?.upperBound ?? script.endIndex
                continue
            }
            if c == "\"" {
                var j = script.index(after: i)
                while j < script.endIndex && script[j] != "\"" {
                    if script[j] == "\\" { j = script.index(after: j) }
                    if j < script.endIndex { j = script.index(after: j) }
                }
                i = j < script.endIndex ? script.index(after: j) : j
                continue
            }
            if ScriptScanner.isIdent(c) {
                var j = i
                while j < script.endIndex && ScriptScanner.isIdent(script[j]) { j = script.index(after: j) }
                if depth == 0 && (script[i..<j] == "BEGIN" || script[i..<j] == "begin") { sawBegin = true }
                i = j
                continue
            }
            if c == "{" {
                if depth == 0 && sawBegin { return script.index(after: i) }
                depth += 1
            } else if c == "}" {
                depth = max(0, depth - 1)
                if depth == 0 { sawBegin = false }
            }
            i = script.index(after: i)
        }
        return nil
    }

    /// The unload guard: exit as soon as a module whose globals the script reads goes away.
    func guardProbe(_ modules: [String]) -> String {
        let format = kernel.path(.events) + "/module/module_free/format"
        guard FileBytes.exists(format) else {
            notes.append("this kernel has no module:module_free tracepoint: the script has no unload guard for \(modules.joined(separator: ", "))")
            return ""
        }
        let condition = modules.map { "str(args->name) == \"\($0)\"" }.joined(separator: " || ")
        return "\n// kreach: stop before reading the globals of an unloaded module\n"
            + "tracepoint:module:module_free /\(condition)/ {\n"
            + "\tprintf(\"kreach: module %s was unloaded; its globals are gone, exiting\\n\", str(args->name));\n\texit();\n}\n"
    }
}

/// Finds global references in bpftrace source, skipping strings and comments.
struct ScriptScanner {
    let chars: [Character]
    let file: String

    static func isIdent(_ c: Character) -> Bool { c == "_" || (c.isASCII && (c.isLetter || c.isNumber)) }

    static func error(_ message: String, at range: Range<Int>, chars: [Character], file: String) -> ScriptError {
        var line = 1, lineStart = 0
        for i in 0..<min(range.lowerBound, chars.count) where chars[i] == "\n" { line += 1; lineStart = i + 1 }
        var lineEnd = lineStart
        while lineEnd < chars.count && chars[lineEnd] != "\n" { lineEnd += 1 }
        return ScriptError(file: file, line: line, column: range.lowerBound - lineStart + 1,
                           width: min(range.count, lineEnd - range.lowerBound), message: message,
                           sourceLine: String(chars[lineStart..<lineEnd]))
    }

    func references() throws -> [GlobalReference] { try scan().references }

    /// The global references and the walk statements in the script, in order.
    func scan() throws -> (references: [GlobalReference], walks: [WalkStatement]) {
        var refs: [GlobalReference] = []
        var walks: [WalkStatement] = []
        var i = 0
        var floor = 0  // the end of the previous reference: a module name never reaches back into it
        while i < chars.count {
            let c = chars[i]
            // Comments and strings are not code.
            if c == "/" && i + 1 < chars.count && chars[i + 1] == "/" {
                while i < chars.count && chars[i] != "\n" { i += 1 }
                continue
            }
            if c == "/" && i + 1 < chars.count && chars[i + 1] == "*" {
                i += 2
                while i + 1 < chars.count && !(chars[i] == "*" && chars[i + 1] == "/") { i += 1 }
                i += 2
                continue
            }
            if c == "\"" {
                i += 1
                while i < chars.count && chars[i] != "\"" { if chars[i] == "\\" { i += 1 }; i += 1 }
                i += 1
                continue
            }
            // A chain walk is a statement (ScriptWalk); the other container walks of `show` are no bpftrace:
            // say why, not bpftrace's "unknown function".
            if ScriptScanner.isIdent(c), !c.isNumber, i == 0 || !ScriptScanner.isIdent(chars[i - 1]) {
                var e = i
                while e < chars.count && ScriptScanner.isIdent(chars[e]) { e += 1 }
                if let helper = ContainerHelper(rawValue: String(chars[i..<e])), skipSpaces(e) < chars.count, chars[skipSpaces(e)] == "(" {
                    guard ScriptChain(helper) != nil else {
                        throw ScriptScanner.error("\(helper.macro): \(ScriptChain.showOnly(helper))", at: i..<e, chars: chars, file: file)
                    }
                    let walk = try walkStatement(helper, name: i..<e)
                    walks.append(walk)
                    i = walk.header.upperBound
                    floor = i
                    continue
                }
            }
            guard c == "`" else { i += 1; continue }
            // module`name or `name
            var start = i
            var module: String?
            var m = i
            while m > floor && ScriptScanner.isIdent(chars[m - 1]) { m -= 1 }
            if m < i {
                module = String(chars[m..<i])
                start = m
            }
            var j = i + 1
            while j < chars.count && ScriptScanner.isIdent(chars[j]) { j += 1 }
            guard j > i + 1 else {
                throw ScriptScanner.error("expected a global's name after '`'", at: i..<(i + 1), chars: chars, file: file)
            }
            // A chooser among same-named symbols sticks to the name: #N, @ADDRESS (hex, 0x optional).
            if j < chars.count, chars[j] == "#" || chars[j] == "@" {
                var e = j + 1
                if chars[j] == "@", e + 1 < chars.count, chars[e] == "0", chars[e + 1] == "x" || chars[e + 1] == "X" { e += 2 }
                let digitsStart = e
                while e < chars.count && (chars[j] == "#" ? chars[e].isASCII && chars[e].isNumber : chars[e].isHexDigit) { e += 1 }
                guard e > digitsStart, e == chars.count || !ScriptScanner.isIdent(chars[e]) else {
                    throw ScriptScanner.error(chars[j] == "#" ? "expected a position after '#' (NAME#N, from 1)" : "expected a hex address after '@' (NAME@ADDRESS)",
                                              at: j..<max(e, j + 1), chars: chars, file: file)
                }
                j = e
            }
            let (range, opaque, cast) = enclosing(start..<j, floor: floor)
            refs.append(GlobalReference(range: range, expression: String(chars[range]),
                                        opaque: opaque.map { ($0.lowerBound - range.lowerBound)..<($0.upperBound - range.lowerBound) },
                                        castBefore: cast, module: module == nil || module == "vmlinux" ? nil : module))
            i = range.upperBound
            floor = range.upperBound
        }
        return (refs, walks)
    }

    /// The walk statement whose macro name is at `name`: `NAME(ARGS) {` on one line, and its body's `}`.
    func walkStatement(_ helper: ContainerHelper, name: Range<Int>) throws -> WalkStatement {
        let usage = "\(helper.macro)(TYPE, HEAD, MEMBER, $VAR[, MAX]) { ... }"
        let open = skipSpaces(name.upperBound)
        guard let close = matching(open + 1, ")") else {
            throw ScriptScanner.error("\(helper.macro): its arguments end on their line with ')': \(usage)", at: name, chars: chars, file: file)
        }
        let brace = skipSpaces(close + 1)
        guard brace < chars.count, chars[brace] == "{" else {
            throw ScriptScanner.error("\(helper.macro) is a statement in a script, followed by its body: \(usage)", at: name, chars: chars, file: file)
        }
        guard let end = closingBrace(brace) else {
            throw ScriptScanner.error("\(helper.macro): its body has no closing '}'", at: brace..<(brace + 1), chars: chars, file: file)
        }
        // The arguments, split at commas outside brackets.
        var arguments: [Range<Int>] = []
        var depth = 0, from = open + 1
        for k in (open + 1)...close {
            let c = chars[k]
            if c == "(" || c == "[" { depth += 1 } else if (c == ")" || c == "]") && k < close { depth -= 1 }
            if depth == 0 && (c == "," || k == close) {
                arguments.append(trimmed(from..<k))
                from = k + 1
            }
        }
        return WalkStatement(helper: helper, start: name.lowerBound, header: name.lowerBound..<(brace + 1), arguments: arguments, close: end)
    }

    /// The `}` closing the `{` at `open`, skipping comments and strings.
    func closingBrace(_ open: Int) -> Int? {
        var depth = 0
        var k = open
        while k < chars.count {
            let c = chars[k]
            if c == "/" && k + 1 < chars.count && chars[k + 1] == "/" {
                while k < chars.count && chars[k] != "\n" { k += 1 }
                continue
            }
            if c == "/" && k + 1 < chars.count && chars[k + 1] == "*" {
                k += 2
                while k + 1 < chars.count && !(chars[k] == "*" && chars[k + 1] == "/") { k += 1 }
                k += 2
                continue
            }
            if c == "\"" {
                k += 1
                while k < chars.count && chars[k] != "\"" { if chars[k] == "\\" { k += 1 }; k += 1 }
                k += 1
                continue
            }
            if c == "{" { depth += 1 } else if c == "}" {
                depth -= 1
                if depth == 0 { return k }
            }
            k += 1
        }
        return nil
    }

    /// The largest expression around the global at `name` that kreach resolves: postfix `.member`, `->member`,
    /// `[index]`; prefix `&`, `*`, `-` and casts to non-integer types; parentheses around all that; and
    /// `per_cpu(GLOBAL, CPU)`. Also returns the index texts left to bpftrace and a bpftrace integer cast in front.
    func enclosing(_ name: Range<Int>, floor: Int) -> (Range<Int>, [Range<Int>], String?) {
        var lo = name.lowerBound, hi = name.upperBound
        var opaque: [Range<Int>] = []
        var integerCast: String?
        for _ in 0..<ExpressionParser.maxDepth {
            hi = postfix(hi, &opaque)
            // Prefix operators and casts, innermost first.
            prefixes: while true {
                let p = skipSpacesBack(lo - 1)
                guard p >= floor else { break }
                switch chars[p] {
                case "&", "*", "-":
                    guard isUnary(p) else { break prefixes }
                    lo = p
                case ")":
                    guard let (open, type) = castText(closingAt: p), open >= floor else { break prefixes }
                    if ScriptGenerator.bpftraceIntegers[type] != nil {
                        if lo == name.lowerBound && hi == name.upperBound { integerCast = type }
                        return (lo..<hi, opaque, integerCast)
                    }
                    lo = open
                default:
                    break prefixes
                }
            }
            // Parentheses around the whole: `(EXPR)`, or per_cpu(GLOBAL, CPU).
            let open = skipSpacesBack(lo - 1)
            guard open >= floor, chars[open] == "(" else { break }
            let before = skipSpacesBack(open - 1)
            let after = skipSpaces(hi)
            if before >= floor, ScriptScanner.isIdent(chars[before]) {
                var w = before
                while w > floor && ScriptScanner.isIdent(chars[w - 1]) { w -= 1 }
                guard String(chars[w...before]) == "per_cpu", lo == name.lowerBound, after < chars.count, chars[after] == ",",
                      let close = matching(after + 1, ")") else { break }
                let cpu = trimmed((after + 1)..<close)
                if !kreachIndex(cpu) { opaque.append(cpu) }
                lo = w
                hi = close + 1
                continue
            }
            guard after < chars.count, chars[after] == ")" else { break }
            lo = open
            hi = after + 1
        }
        return (lo..<hi, opaque, integerCast)
    }

    /// Consumes `.member`, `->member` and `[index]` from `k`.
    func postfix(_ k: Int, _ opaque: inout [Range<Int>]) -> Int {
        var k = k
        while k < chars.count {
            if chars[k] == ".", k + 1 < chars.count, ScriptScanner.isIdent(chars[k + 1]), !chars[k + 1].isNumber {
                k += 1
                while k < chars.count && ScriptScanner.isIdent(chars[k]) { k += 1 }
            } else if chars[k] == "-", k + 2 < chars.count, chars[k + 1] == ">", ScriptScanner.isIdent(chars[k + 2]) {
                k += 2
                while k < chars.count && ScriptScanner.isIdent(chars[k]) { k += 1 }
            } else if chars[k] == "[", let close = matching(k + 1, "]") {
                let inside = trimmed((k + 1)..<close)
                if !kreachIndex(inside) { opaque.append(inside) }
                k = close + 1
            } else {
                break
            }
        }
        return k
    }

    /// An index kreach evaluates itself: a number, or an expression naming a global or `current`.
    func kreachIndex(_ r: Range<Int>) -> Bool {
        let text = String(chars[r])
        if text.contains("`") { return true }
        if text.hasPrefix("current") && !(text.count > 7 && ScriptScanner.isIdent(Array(text)[7])) {
            return (try? ExpressionParser.parse(text)) != nil
        }
        if text.hasPrefix("0x") || text.hasPrefix("0X") { return !text.isEmpty && UInt64(text.dropFirst(2), radix: 16) != nil }
        return UInt64(text) != nil
    }

    /// The position of the bracket that closes at depth 0 from `from` (same line), skipping strings.
    func matching(_ from: Int, _ close: Character) -> Int? {
        var depth = 0
        var k = from
        while k < chars.count && chars[k] != "\n" {
            let c = chars[k]
            if c == "\"" { return nil }
            if c == "(" || c == "[" { depth += 1 } else if c == ")" || c == "]" {
                if depth == 0 { return c == close ? k : nil }
                depth -= 1
            }
            k += 1
        }
        return nil
    }

    /// Whether the `&`, `*` or `-` at `p` is a prefix operator (what precedes it can't end an operand).
    func isUnary(_ p: Int) -> Bool {
        if p > 0 && chars[p - 1] == chars[p] && chars[p] != "*" { return false }  // && and --
        let q = skipSpacesBack(p - 1)
        guard q >= 0 else { return true }
        let c = chars[q]
        if ScriptScanner.isIdent(c) || c == "]" || c == "\"" { return false }
        if c == ")" { return castText(closingAt: q) != nil }
        return true
    }

    /// The type in the cast whose `)` is at `p`: `(struct foo *)`, `(mod:T *)`, `(u64)`; nil when not a type.
    func castText(closingAt p: Int) -> (Int, String)? {
        var q = p - 1
        while q >= 0 && chars[q] != "(" && chars[q] != "\n" && chars[q] != ")" { q -= 1 }
        guard q >= 0, chars[q] == "(" else { return nil }
        let inside = String(chars[(q + 1)..<p]).trimming()
        var words = inside
        while words.hasSuffix("*") || words.hasSuffix(" ") { words.removeLast() }
        let ok = !words.isEmpty && words.allSatisfy { ScriptScanner.isIdent($0) || $0 == " " || $0 == ":" }
            && words.first.map { !$0.isNumber } == true
        return ok ? (q, inside) : nil
    }

    func skipSpacesBack(_ p: Int) -> Int {
        var p = p
        while p >= 0 && (chars[p] == " " || chars[p] == "\t") { p -= 1 }
        return p
    }

    func skipSpaces(_ p: Int) -> Int {
        var p = p
        while p < chars.count && (chars[p] == " " || chars[p] == "\t") { p += 1 }
        return p
    }

    func trimmed(_ r: Range<Int>) -> Range<Int> {
        var lo = r.lowerBound, hi = r.upperBound
        while lo < hi && (chars[lo] == " " || chars[lo] == "\t") { lo += 1 }
        while hi > lo && (chars[hi - 1] == " " || chars[hi - 1] == "\t") { hi -= 1 }
        return lo..<hi
    }
}
