import KreachSupport

/// An error in an expression, pointing at the part that caused it.
public enum ExpressionError: Error, CustomStringConvertible {
    /// `message`, then the expression with a caret under `range` (character offsets). Lines of `message`
    /// after its first (an ambiguity's candidates) follow the caret.
    case at(String, source: String, range: Range<Int>)
    case plain(String)

    public var description: String {
        switch self {
        case .plain(let m): return m
        case let .at(m, source, range):
            let (line, caret) = Terminal.caretLines(Array(source), range)
            var rest = ""
            var first = Substring(m)
            if let nl = m.firstIndex(of: "\n") {
                first = m[..<nl]
                rest = String(m[nl...])
            }
            return first + "\n  " + line + "\n  " + caret + rest
        }
    }

    /// The first line only.
    public var message: String {
        switch self {
        case .plain(let m), .at(let m, _, _): return m
        }
    }
}

/// A type named in a cast: `struct nlm_file *`, `unsigned long`, `lockd:struct nlm_file`, `char [16]`.
public struct TypeName: Equatable, Sendable {
    public var module: String?
    /// The words before the stars: ["struct", "nlm_file"], ["unsigned", "long"], ["pid_t"].
    public var words: [String]
    public var pointers: Int
    public var arrayCount: Int?
    public var text: String
}

/// The parsed expression. `range` is where the node is in the source, for error carets.
public indirect enum Expr {
    case symbol(String, range: Range<Int>)
    case number(UInt64, range: Range<Int>)
    case current(range: Range<Int>)
    case member(Expr, String, arrow: Bool, range: Range<Int>)
    case index(Expr, Expr, range: Range<Int>)
    case deref(Expr, range: Range<Int>)
    case addressOf(Expr, range: Range<Int>)
    case negate(Expr, range: Range<Int>)
    case cast(TypeName, Expr, range: Range<Int>)
    /// per_cpu(VAR, CPU)
    case perCPU(Expr, Expr, range: Range<Int>)
    /// list_for_each_entry(TYPE, HEAD, MEMBER) and friends: `helper` names the kernel macro. TYPE is nil and
    /// MEMBER empty where the macro has none (`for_each_cpu(MASK)`, `xa_for_each(TYPE, XA)`); `count` is the
    /// last argument of the macros that take one (`for_each_set_bit(ADDR, NBITS)`, `hash_for_each`'s BUCKETS).
    case container(helper: ContainerHelper, TypeName?, Expr, member: String, count: Expr? = nil, range: Range<Int>)
    /// per_cpu_sum(VAR.member...): the sum of a per-CPU variable's scalar over the possible CPUs.
    case perCPUSum(Expr, range: Range<Int>)
    /// container_of(PTR, TYPE, MEMBER): a `TYPE *` to the object whose MEMBER (a member path) PTR points at.
    case containerOf(Expr, TypeName, member: String, range: Range<Int>)
    /// Script text kreach leaves to bpftrace (an index such as `$i` or `arg0`); only the script scanner asks for it.
    case opaque(String, range: Range<Int>)

    public var range: Range<Int> {
        switch self {
        case .symbol(_, let r), .number(_, let r), .current(let r), .member(_, _, _, let r), .index(_, _, let r),
             .deref(_, let r), .addressOf(_, let r), .negate(_, let r), .cast(_, _, let r), .perCPU(_, _, let r), .perCPUSum(_, let r),
             .container(_, _, _, _, _, let r), .containerOf(_, _, _, let r), .opaque(_, let r):
            return r
        }
    }
}

/// Lexer and recursive-descent parser for kreach expressions.
///
/// Grammar: `name`, `mod:name`, ``mod`name``, `` `name `` (vmlinux), `name#N`, `name@ADDR`, integers
/// (decimal, 0x hex), `current`, `&x`, `*p`, `-n`, `p->f`, `s.f`, `a[i]`, `(TYPE)x`, `(x)`,
/// `per_cpu(VAR, CPU)`, `per_cpu_sum(VAR.member)`, `container_of(PTR, TYPE, MEMBER)`, and the container walks of `ContainerHelper`
/// (`list_for_each_entry(TYPE, HEAD, MEMBER)`, `hlist_for_each_entry`, `hlist_nulls_for_each_entry`,
/// `rbtree_inorder_for_each_entry(TYPE, ROOT, MEMBER)`, `hash_for_each(TYPE, TABLE, MEMBER[, BUCKETS])`,
/// `xa_for_each(TYPE, XA)`, `for_each_cpu(MASK)`, `for_each_set_bit(ADDR, NBITS)`, ...).
public struct ExpressionParser {
    enum Token: Equatable {
        case ident(String)
        case number(UInt64)
        case punct(String)
        case opaque(String)
        case end
    }

    let source: String
    let chars: [Character]
    var tokens: [(Token, Range<Int>)] = []
    var pos = 0
    /// Depth of the tree under the node the last grammar function returned (`node(_:above:at:)` sets it).
    var lastDepth = 0
    /// Grammar functions active (parentheses and prefix operators recurse without building nodes).
    var frames = 0
    /// Answers whether an identifier names a type (a typedef or base type), to tell `(pid_t)x` from `(x)`.
    let isTypeName: (String) -> Bool
    /// Character ranges that are opaque script text (each becomes one `Expr.opaque`).
    var opaque: [Range<Int>] = []

    /// Deepest expression tree (and parser recursion) accepted: the parser, the evaluator and the release of
    /// the tree all recurse once per level, so a 3 KB argument must not be able to overflow the stack.
    public static let maxDepth = 256

    static let typeWords: Set<String> = ["struct", "union", "enum", "unsigned", "signed", "long", "short", "int", "char",
                                         "void", "_Bool", "bool", "const", "volatile", "float", "double"]

    public static func parse(_ source: String, isTypeName: @escaping (String) -> Bool = { _ in false },
                             opaque: [Range<Int>] = []) throws(ExpressionError) -> Expr {
        var p = ExpressionParser(source: source, chars: Array(source), isTypeName: isTypeName)
        p.opaque = opaque
        try p.lex()
        let e = try p.expression()
        guard case .end = p.peek else { throw p.error("unexpected \(p.describe(p.peek)) after the expression", p.tokens[p.pos].1) }
        return e
    }

    func error(_ message: String, _ range: Range<Int>) -> ExpressionError {
        .at(message, source: source, range: range)
    }

    // MARK: lexer

    mutating func lex() throws(ExpressionError) {
        var i = 0
        func isIdentStart(_ c: Character) -> Bool { c == "_" || c.isLetter && c.isASCII }
        func isIdent(_ c: Character) -> Bool { isIdentStart(c) || (c.isNumber && c.isASCII) }
        while i < chars.count {
            let c = chars[i]
            if c == " " || c == "\t" || c == "\n" { i += 1; continue }
            let start = i
            if let r = opaque.first(where: { $0.lowerBound == i }), r.upperBound <= chars.count, !r.isEmpty {
                tokens.append((.opaque(String(chars[r])), r))
                i = r.upperBound
                continue
            }
            if isIdentStart(c) {
                while i < chars.count && isIdent(chars[i]) { i += 1 }
                // Symbol choosers stick to the name: name#N, name@ADDR.
                if i < chars.count && chars[i] == "#" {
                    i += 1
                    while i < chars.count && chars[i].isNumber { i += 1 }
                } else if i < chars.count && chars[i] == "@" {
                    i += 1
                    while i < chars.count && (chars[i].isHexDigit || chars[i] == "x") { i += 1 }
                }
                tokens.append((.ident(String(chars[start..<i])), start..<i))
                continue
            }
            if c.isNumber {
                while i < chars.count && isIdent(chars[i]) { i += 1 }
                let text = String(chars[start..<i])
                let value: UInt64?
                if text.hasPrefix("0x") || text.hasPrefix("0X") { value = UInt64(text.dropFirst(2), radix: 16) } else { value = UInt64(text) }
                guard let value else { throw error("bad number \(text)", start..<i) }
                tokens.append((.number(value), start..<i))
                continue
            }
            if c == "-" && i + 1 < chars.count && chars[i + 1] == ">" {
                tokens.append((.punct("->"), i..<(i + 2)))
                i += 2
                continue
            }
            if "()[].*&,:`-".contains(c) {
                tokens.append((.punct(String(c)), i..<(i + 1)))
                i += 1
                continue
            }
            throw error("unexpected character '\(c)'", i..<(i + 1))
        }
        tokens.append((.end, chars.count..<chars.count))
    }

    var peek: Token { tokens[pos].0 }
    func peek(_ k: Int) -> Token { pos + k < tokens.count ? tokens[pos + k].0 : .end }
    var here: Range<Int> { tokens[pos].1 }

    func describe(_ t: Token) -> String {
        switch t {
        case .ident(let s): return "'\(s)'"
        case .number(let n): return "'\(n)'"
        case .punct(let p): return "'\(p)'"
        case .opaque(let t): return "'\(t)'"
        case .end: return "end of expression"
        }
    }

    mutating func expect(_ p: String) throws(ExpressionError) -> Range<Int> {
        guard peek == .punct(p) else { throw error("expected '\(p)', found \(describe(peek))", here) }
        defer { pos += 1 }
        return here
    }

    mutating func identifier(_ what: String) throws(ExpressionError) -> (String, Range<Int>) {
        guard case .ident(let s) = peek else { throw error("expected \(what), found \(describe(peek))", here) }
        defer { pos += 1 }
        return (s, here)
    }

    // MARK: grammar

    var tooDeep: String { "expression nested deeper than \(ExpressionParser.maxDepth) levels" }

    /// `e`, one level above children `depth` levels deep; `at` is where the caret goes when that is too deep.
    mutating func node(_ e: Expr, above depth: Int, at: Range<Int>) throws(ExpressionError) -> Expr {
        lastDepth = depth + 1
        guard lastDepth <= ExpressionParser.maxDepth else { throw error(tooDeep, at) }
        return e
    }

    mutating func expression() throws(ExpressionError) -> Expr { try unary() }

    mutating func unary() throws(ExpressionError) -> Expr {
        frames += 1
        defer { frames -= 1 }
        guard frames <= ExpressionParser.maxDepth else { throw error(tooDeep, here) }
        let start = here.lowerBound
        let op = here
        switch peek {
        case .punct("*"):
            pos += 1
            let e = try unary()
            return try node(.deref(e, range: start..<e.range.upperBound), above: lastDepth, at: op)
        case .punct("&"):
            pos += 1
            let e = try unary()
            return try node(.addressOf(e, range: start..<e.range.upperBound), above: lastDepth, at: op)
        case .punct("-"):
            pos += 1
            let e = try unary()
            return try node(.negate(e, range: start..<e.range.upperBound), above: lastDepth, at: op)
        case .punct("(") where castAhead():
            pos += 1
            let t = try typeName()
            _ = try expect(")")
            let e = try unary()
            return try node(.cast(t, e, range: start..<e.range.upperBound), above: lastDepth, at: op)
        default:
            return try postfix()
        }
    }

    /// After '(' comes a type: a type keyword, `mod:struct`, or a known type name followed by ')' or '*'.
    func castAhead() -> Bool {
        guard case .ident(let w) = peek(1) else { return false }
        if ExpressionParser.typeWords.contains(w) { return true }
        if peek(2) == .punct(":"), case .ident(let w2) = peek(3) {
            if ExpressionParser.typeWords.contains(w2) { return true }
            if peek(4) == .punct(")") || peek(4) == .punct("*") || peek(4) == .punct("[") { return isTypeName(w + ":" + w2) }
        }
        if peek(2) == .punct(")") || peek(2) == .punct("*") || peek(2) == .punct("[") { return isTypeName(w) }
        return false
    }

    mutating func typeName() throws(ExpressionError) -> TypeName {
        let start = here.lowerBound
        var module: String?
        if case .ident(let m) = peek, peek(1) == .punct(":") {
            module = m
            pos += 2
        }
        var words: [String] = []
        while case .ident(let w) = peek {
            if w == "const" || w == "volatile" { pos += 1; continue }
            words.append(w)
            pos += 1
            if w == "struct" || w == "union" || w == "enum" {
                let (n, _) = try identifier("a \(w) name")
                words.append(n)
                break
            }
            if !ExpressionParser.typeWords.contains(w) { break }  // a typedef name stands alone
        }
        guard !words.isEmpty else { throw error("expected a type, found \(describe(peek))", here) }
        var pointers = 0
        while peek == .punct("*") {
            // Each '*' nests the type once more (and its printing recurses once more).
            guard pointers < ExpressionParser.maxDepth else { throw error("type \(tooDeep)", here) }
            pointers += 1
            pos += 1
        }
        var count: Int?
        if peek == .punct("[") {
            pos += 1
            guard case .number(let n) = peek, n <= UInt64(Int32.max) else { throw error("expected an array length", here) }
            count = Int(n)
            pos += 1
            _ = try expect("]")
        }
        let end = tokens[pos - 1].1.upperBound
        return TypeName(module: module, words: words, pointers: pointers, arrayCount: count, text: String(chars[start..<end]))
    }

    mutating func postfix() throws(ExpressionError) -> Expr {
        var e = try primary()
        while true {
            switch peek {
            case .punct("."), .punct("->"):
                let arrow = peek == .punct("->")
                pos += 1
                let (name, r) = try identifier("a member name")
                e = try node(.member(e, name, arrow: arrow, range: e.range.lowerBound..<r.upperBound), above: lastDepth, at: r)
            case .punct("["):
                let open = here
                pos += 1
                let base = lastDepth
                let i = try expression()
                let close = try expect("]")
                e = try node(.index(e, i, range: e.range.lowerBound..<close.upperBound), above: max(base, lastDepth), at: open)
            default:
                return e
            }
        }
    }

    mutating func primary() throws(ExpressionError) -> Expr {
        let start = here
        switch peek {
        case .number(let n):
            pos += 1
            return try node(.number(n, range: start), above: 0, at: start)
        case .opaque(let text):
            pos += 1
            return try node(.opaque(text, range: start), above: 0, at: start)
        case .punct("("):
            pos += 1
            let e = try expression()
            _ = try expect(")")
            return e
        case .punct("`"):
            // `name: vmlinux
            pos += 1
            let (name, r) = try identifier("a symbol name after '`'")
            return try node(.symbol("vmlinux:" + name, range: start.lowerBound..<r.upperBound), above: 0, at: start)
        case .ident(let name):
            pos += 1
            if name == "current" { return try node(.current(range: start), above: 0, at: start) }
            if name == "per_cpu" && peek == .punct("(") {
                pos += 1
                let v = try expression()
                let vDepth = lastDepth
                _ = try expect(",")
                let cpu = try expression()
                let close = try expect(")")
                return try node(.perCPU(v, cpu, range: start.lowerBound..<close.upperBound), above: max(vDepth, lastDepth), at: start)
            }
            if name == "per_cpu_sum" && peek == .punct("(") {
                pos += 1
                let v = try expression()
                let close = try expect(")")
                return try node(.perCPUSum(v, range: start.lowerBound..<close.upperBound), above: lastDepth, at: start)
            }
            if name == "container_of" && peek == .punct("(") {
                pos += 1
                let pointer = try expression()
                let depth = lastDepth
                _ = try expect(",")
                let t = try typeName()
                _ = try expect(",")
                var (member, _) = try identifier("the member PTR points at")
                // A member path: a.b.c
                while peek == .punct(".") {
                    pos += 1
                    member += "." + (try identifier("a member name after '.'")).0
                }
                let close = try expect(")")
                return try node(.containerOf(pointer, t, member: member, range: start.lowerBound..<close.upperBound), above: depth, at: start)
            }
            if let helper = ContainerHelper(rawValue: name), peek == .punct("(") {
                pos += 1
                var t: TypeName?
                if helper.arguments != .head && helper.arguments != .headCount {
                    t = try typeName()
                    _ = try expect(",")
                }
                let head = try expression()
                var member = ""
                if helper.arguments == .typeHeadMember {
                    _ = try expect(",")
                    member = try identifier("the member that links the entries").0
                    // A member path: io_task_work.node.
                    while peek == .punct(".") {
                        pos += 1
                        member += "." + (try identifier("a member name after '.'")).0
                    }
                    // MEMBER[N]: one element of an array of links (e.g. pid_links[0]).
                    if peek == .punct("[") {
                        pos += 1
                        guard case .number(let n) = peek else { throw error("expected an index", here) }
                        pos += 1
                        _ = try expect("]")
                        member += "[\(n)]"
                    }
                }
                var depth = lastDepth
                var count: Expr?
                // NBITS (required), or BUCKETS (hash_for_each over a pointer).
                if helper.takesCount, helper.arguments == .headCount || peek == .punct(",") {
                    _ = try expect(",")
                    count = try expression()
                    depth = max(depth, lastDepth)
                }
                let close = try expect(")")
                return try node(.container(helper: helper, t, head, member: member, count: count, range: start.lowerBound..<close.upperBound),
                                above: depth, at: start)
            }
            // mod:name and mod`name
            if peek == .punct(":") || peek == .punct("`") {
                let sep = peek
                pos += 1
                guard case .ident(let inner) = peek else {
                    throw error("expected a symbol name after \(describe(sep)), found \(describe(peek))", here)
                }
                let r = here
                pos += 1
                return try node(.symbol(name + ":" + inner, range: start.lowerBound..<r.upperBound), above: 0, at: start)
            }
            return try node(.symbol(name, range: start), above: 0, at: start)
        default:
            throw error("expected a name, number or '(', found \(describe(peek))", start)
        }
    }
}
