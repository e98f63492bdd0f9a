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

/// One kernel global named in a script (``mod`name`` or `` `name ``) and the static path after it.
struct GlobalReference {
    /// Character range in the script of the whole reference (symbol plus folded `.member`/`[N]` chain).
    let range: Range<Int>
    /// The kreach expression for it, as written: ``brd`rd_size``, ``lockd`nlm_files[3].first``, ``lockd`nlm_blocked#2``.
    let expression: String
    /// A bpftrace cast right before it, e.g. `uint64` in `(uint64)brd`rd_size`.
    let castBefore: String?
    let module: String?
}

/// Expands a bpftrace script that names kernel globals DTrace-style into plain bpftrace.
///
/// Each ``mod`var`` (or `` `var `` for vmlinux) with the `.member` / `[N]` chain after it is resolved now,
/// with kreach's rules (casts, BTF, module parameters, .ko sizes), to an absolute address and a typed
/// read: `(*(uint32 *)0xffffffffc05740d8)`. `->` and non-constant indexing are left to bpftrace. Lines are
/// kept where they are (additions go at the end), so bpftrace's own line numbers still point into the
/// user's script. Scripts that use module globals get an unload guard: a probe on the
/// `module:module_free` tracepoint that exits before the script can read freed memory. Module structs
/// the script names get C definitions (bpftrace knows only vmlinux BTF), on the first code line.
public final class ScriptGenerator {
    let evaluator: Evaluator
    let kernel: Kernel
    /// Notes for stderr (no unload guard available, …).
    public private(set) var notes: [String] = []

    /// Builds `@kreach.capture(FUNC[, NAME])` directives; nil refuses them.
    let capture: CaptureBuilder?

    public init(evaluator: Evaluator, capture: CaptureBuilder? = nil) {
        self.evaluator = evaluator
        self.kernel = evaluator.kernel
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
                let args = String(chars[(i + d.count)..<j]).split(separator: ",").map { String($0).trimmingSpaces() }
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
        let refs = try ScriptScanner(chars: chars, file: file).references()
        var out = ""
        var last = 0
        var modules: [String] = []
        for ref in refs {
            out += String(chars[last..<ref.range.lowerBound])
            out += try replacement(for: ref, chars: chars, file: file)
            last = ref.range.upperBound
            if let m = ref.module, !modules.contains(m) { modules.append(m) }
        }
        out += String(chars[last...])
        if !modules.isEmpty { out = try addGuard(out, modules) }
        return try addDefinitions(out, modules: modules)
    }

    /// Prepends C definitions of module types the script names (bpftrace 0.17 knows only vmlinux BTF)
    /// to the first line that isn't a preprocessor line, so every line keeps its number.
    func addDefinitions(_ script: String, modules: [String]) throws -> String {
        var writer = CDefinitionWriter(types: evaluator.types)
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

    func replacement(for ref: GlobalReference, chars: [Character], file: String) throws -> String {
        let object: Object
        do {
            guard case .object(let o) = try evaluator.evaluate(ref.expression) else {
                throw error("a container walk can't be used in a script", ref, chars, file)
            }
            object = o
        } catch let e as ScriptError {
            throw e
        } catch let e as ExpressionError {
            throw error(e.message, ref, chars, file)
        }
        guard let address = object.address else { throw error("\(ref.expression) has no address", ref, chars, file) }
        let hex = "0x" + String(address, radix: 16)
        let type = try object.type.resolved()
        if case .untyped(let size) = type {
            // A bpftrace integer cast right before the global says how to read it.
            if let cast = ref.castBefore, let (castSize, signed) = ScriptGenerator.bpftraceIntegers[cast] {
                if size > 0 && size != castSize && size != 8 {
                    notes.append("\(ref.expression) is \(size) bytes but is read as \(cast)")
                }
                return "(*(\(ScriptGenerator.integerType(size: castSize, signed: signed) ?? cast) *)\(hex))"
            }
            throw error("\(ref.expression) has no known type: cast it, e.g. (uint64)\(String(chars[ref.range]))", ref, chars, file)
        }
        switch type {
        case .pointer(let target):
            // A typed pointer value; bpftrace follows '->' through vmlinux BTF.
            if let (btf, t) = try target.record(), t.kind == .structure || t.kind == .union {
                if btf.owner(of: t.id).objectName != "vmlinux" {
                    notes.append("\(ref.expression) points to \(target.name) from \(btf.owner(of: t.id).objectName)'s BTF, which bpftrace may not know; '->' on it may fail")
                }
                return "((\(target.name) *)*(uint64 *)\(hex))"
            }
            return "(*(uint64 *)\(hex))"
        case let .array(element, count):
            if let (_, et) = try element.record(), et.kind == .int, et.size == 1 {
                return "str(\(hex), \(count))"
            }
            throw error("\(ref.expression) is an array (\(object.type.name)): index it, e.g. [0]", ref, chars, file)
        case let .btf(btf, id):
            let t = try btf.type(id)
            switch t.kind {
            case .int, .enumeration, .enum64:
                guard let name = ScriptGenerator.integerType(size: Int(t.size), signed: t.isSigned) else {
                    throw error("\(object.type.name) (\(t.size) bytes) has no bpftrace integer type", ref, chars, file)
                }
                return "(*(\(name) *)\(hex))"
            case .structure, .union:
                if btf.owner(of: id).objectName == "vmlinux" {
                    return "(*(\(object.type.name) *)\(hex))"
                }
                throw error("\(ref.expression) is a \(object.type.name) from \(btf.owner(of: id).objectName)'s BTF: name one of its members (.member)", ref, chars, file)
            default:
                throw error("\(ref.expression) is a \(object.type.name), which bpftrace can't read directly", ref, chars, file)
            }
        case .untyped:
            throw error("internal: untyped", ref, chars, file)
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
                i = rest.dropFirst(2).range(of: "*/")?.upperBound ?? script.endIndex
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

    func references() throws -> [GlobalReference] {
        var refs: [GlobalReference] = []
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
            // The expression as written (kreach's parser reads mod`name and `name), so messages use the script's notation.
            var expression = String(chars[start..<j])
            // The static chain: .member and [constant].
            var k = j
            while k < chars.count {
                if chars[k] == ".", k + 1 < chars.count, ScriptScanner.isIdent(chars[k + 1]) {
                    var e = k + 1
                    while e < chars.count && ScriptScanner.isIdent(chars[e]) { e += 1 }
                    expression += String(chars[k..<e])
                    k = e
                } else if chars[k] == "[" {
                    var e = k + 1
                    while e < chars.count && (chars[e].isNumber || chars[e] == "x" || chars[e].isHexDigit) { e += 1 }
                    guard e < chars.count, chars[e] == "]", e > k + 1 else { break }  // not constant: bpftrace's job
                    expression += String(chars[k...e])
                    k = e + 1
                } else {
                    break
                }
            }
            refs.append(GlobalReference(range: start..<k, expression: expression, castBefore: castBefore(start),
                                        module: module == nil || module == "vmlinux" ? nil : module))
            i = k
            floor = k
        }
        return refs
    }

    /// `(uint64)` right before position `p` (spaces allowed).
    func castBefore(_ p: Int) -> String? {
        var e = p - 1
        while e >= 0 && chars[e] == " " { e -= 1 }
        guard e >= 0, chars[e] == ")" else { return nil }
        var s = e - 1
        while s >= 0 && chars[s] != "(" && chars[s] != "\n" { s -= 1 }
        guard s >= 0, chars[s] == "(" else { return nil }
        let inside = String(chars[(s + 1)..<e]).trimmingSpaces()
        return inside.isEmpty ? nil : inside
    }
}

extension String {
    func trimmingSpaces() -> String {
        var s = Substring(self)
        while s.first == " " { s = s.dropFirst() }
        while s.last == " " { s = s.dropLast() }
        return String(s)
    }
}
