import BTF
import KernelObject

/// A chain walk written as a statement in a script: `NAME(TYPE, HEAD, MEMBER, $VAR[, MAX]) { BODY }`, the
/// first three arguments as in `kreach show`. It becomes a bounded bpftrace `while` loop (bpftrace 0.17 has
/// no other loop that follows kernel pointers; the verifier walks every iteration, so the bound is a constant).
struct WalkStatement {
    let helper: ContainerHelper
    /// Where the macro's name starts.
    let start: Int
    /// `NAME(...) {`, replaced by the loop's head (one line).
    let header: Range<Int>
    /// The arguments, split at top-level commas, trimmed (ranges in the script).
    let arguments: [Range<Int>]
    /// The body's closing `}`: the note of a walk cut short goes right after it.
    let close: Int
}

/// How a chain walker's links are laid out and where its chain ends (include/linux/list.h, llist.h, list_nulls.h).
enum ScriptChain {
    /// A `struct list_head` ring through `next` (or `prev`): it ends back at the head; NULL is a broken list.
    case ring(link: String)
    /// `first` in the head, then `next` in each node, until NULL (hlist, llist).
    case null(head: String, node: String)
    /// `first` in the head, then `next` in each node, until an odd "nulls" marker; NULL is a broken list.
    case nulls(head: String, node: String)

    init?(_ helper: ContainerHelper) {
        switch helper {
        case .listForEachEntry: self = .ring(link: "next")
        case .listForEachEntryReverse: self = .ring(link: "prev")
        case .hlistForEachEntry: self = .null(head: "hlist_head", node: "hlist_node")
        case .llistForEachEntry: self = .null(head: "llist_head", node: "llist_node")
        case .hlistNullsForEachEntry: self = .nulls(head: "hlist_nulls_head", node: "hlist_nulls_node")
        default: return nil
        }
    }

    /// Why a walker that is no chain stays in `kreach show`, and what a script can do instead.
    static func showOnly(_ helper: ContainerHelper) -> String {
        let show = "only `kreach show` walks them"
        switch helper {
        case .rbtreeInorderForEachEntry:
            return "rbtree walks need a stack: \(show); in a script, follow rb_node pointers yourself (e.g. rb_first's leftmost path in a while loop)"
        case .xaForEach, .idrForEachEntry:
            return "xarray and idr walks descend a tree of nodes (a stack of slots): \(show); in a script, read one index's slot yourself"
        case .mtForEach:
            return "maple tree walks descend a tree of nodes (a stack of slots): \(show)"
        case .hashForEach:
            return "hash_for_each walks an array of heads (a loop per bucket): \(show); in a script, walk one bucket: hlist_for_each_entry(TYPE, &TABLE[$i], MEMBER, $e) { ... }"
        case .forEachCpu, .forEachSetBit:
            return "\(helper.macro) yields bit numbers from a bitmap, not a chain: only `kreach show` walks it; in a script, test the bits in a while loop"
        default:
            return "\(helper.macro): \(show)"
        }
    }
}

extension ScriptGenerator {
    /// Entries a script walk visits when its MAX is not given.
    public static let defaultWalkBound = 1024
    /// The largest MAX: each iteration has at least two conditional jumps, and the verifier refuses a
    /// program past 8192 pending jumps ("The sequence of 8193 jumps is too complex"), so more can never load.
    static let maxWalkBound = 4096

    /// The bpftrace text of a walk statement: the loop's head (replacing `NAME(...) {`) and what goes after the
    /// body's `}` (the notes), both on their lines; and the module the head names, if any.
    /// `enclosing`: the walks around this one, their `$VAR`s and TYPEs (as written), innermost first.
    func expandWalk(_ w: WalkStatement, number: Int, enclosing: [(variable: String, type: String)] = [], chars: [Character],
                    file: String) throws -> (header: String, after: String, module: String?) {
        let helper = w.helper
        func at(_ r: Range<Int>, _ message: String) -> ScriptError {
            ScriptScanner.error("\(helper.macro): \(message)", at: r, chars: chars, file: file)
        }
        guard let chain = ScriptChain(helper) else { throw at(w.start..<(w.start + helper.macro.count), ScriptChain.showOnly(helper)) }
        let usage = "\(helper.macro)(TYPE, HEAD, MEMBER, $VAR[, MAX]) { ... }"
        guard w.arguments.count == 4 || w.arguments.count == 5 else {
            throw at(w.header, "takes 4 or 5 arguments in a script: \(usage)")
        }
        let variable = String(chars[w.arguments[3]])
        let name = variable.dropFirst()
        guard variable.first == "$", let lead = name.first, !lead.isNumber, name.allSatisfy(ScriptScanner.isIdent),
              !name.hasPrefix("__kreach") else {
            throw at(w.arguments[3], "the 4th argument is the loop variable, a $name not starting with $__kreach: \(usage)")
        }
        var bound = ScriptGenerator.defaultWalkBound
        if w.arguments.count == 5 {
            let text = String(chars[w.arguments[4]])
            guard let n = Int(text), n >= 1, n <= ScriptGenerator.maxWalkBound else {
                throw at(w.arguments[4], "MAX is a number from 1 to \(ScriptGenerator.maxWalkBound) (the BPF verifier walks every iteration), not \(text)")
            }
            bound = n
        }

        // TYPE, HEAD, MEMBER as `show` parses them: the script's text from the macro's name, closed after MEMBER.
        // bpftrace's own values in HEAD are opaque to kreach: `[$i]` (a bucket of a hash table), `$VAR` and the
        // builtins `argN`, `retval`, `curtask`. An enclosing walk's variable is a pointer to its TYPE and `curtask`
        // a `struct task_struct *`; each is cast through uint64 so bpftrace adds offsets as bytes (it scales a typed
        // pointer's arithmetic). Other values need a cast written in HEAD: `(struct list_head *)arg0`.
        let spanned = w.start..<w.arguments[2].upperBound
        let headRange = w.arguments[1]
        var source = "", opaque: [Range<Int>] = [], origin: [Int] = []
        var untyped = false  // a bpftrace value with no type in HEAD
        func emit(_ text: String, from script: Int) {
            for c in text {
                source.append(c)
                origin.append(script)
            }
        }
        func emitOpaque(_ text: String, from script: Int) {
            let lower = source.count
            emit(text, from: script)
            opaque.append(lower..<source.count)
        }
        let scanner = ScriptScanner(chars: chars, file: file)
        var k = spanned.lowerBound
        while k < spanned.upperBound {
            let c = chars[k]
            guard headRange.contains(k) else {
                emit(String(c), from: k)
                k += 1
                continue
            }
            if c == "[", let close = scanner.matching(k + 1, "]"), close < headRange.upperBound {
                let inside = scanner.trimmed((k + 1)..<close)
                emit(String(chars[k..<inside.lowerBound]), from: k)
                if scanner.kreachIndex(inside) { emit(String(chars[inside]), from: inside.lowerBound) } else { emitOpaque(String(chars[inside]), from: inside.lowerBound) }
                emit(String(chars[inside.upperBound...close]), from: inside.upperBound)
                k = close + 1
                continue
            }
            let previous = k > headRange.lowerBound ? chars[k - 1] : " "
            if c == "$" || (ScriptScanner.isIdent(c) && !ScriptScanner.isIdent(previous) && previous != "." && previous != "`" && previous != ":" && previous != ">") {
                var end = k + 1
                while end < headRange.upperBound && ScriptScanner.isIdent(chars[end]) { end += 1 }
                let word = String(chars[k..<end])
                let builtin = word == "retval" || word == "curtask" || (word.hasPrefix("arg") && word.count > 3 && word.dropFirst(3).allSatisfy(\.isNumber))
                if c == "$" && end > k + 1 || builtin {
                    if let type = word == "curtask" ? "struct task_struct" : enclosing.first(where: { $0.variable == word })?.type {
                        emit("((\(type) *)", from: k)
                        emitOpaque("(uint64)" + word, from: k)
                        emit(")", from: k)
                    } else {
                        var after = end
                        while after < headRange.upperBound && chars[after] == " " { after += 1 }
                        if after < headRange.upperBound && (chars[after] == "." || (chars[after] == "-" && after + 1 < headRange.upperBound && chars[after + 1] == ">")) {
                            throw at(k..<end, "\(word) is bpftrace's and kreach does not know its type: cast it, as in ((struct task_struct *)\(word))->children (an enclosing walk's $VAR and curtask need none)")
                        }
                        emitOpaque("(uint64)" + word, from: k)
                        untyped = true
                    }
                    k = end
                    continue
                }
                emit(word, from: k)
                k = end
                continue
            }
            emit(String(c), from: k)
            k += 1
        }
        emit(")", from: spanned.upperBound - 1)
        /// A parse or resolve error's range in `source`, in the script.
        func scriptRange(_ r: Range<Int>) -> Range<Int> {
            guard !origin.isEmpty else { return spanned }
            let lower = origin[min(max(r.lowerBound, 0), origin.count - 1)]
            let upper = origin[min(max(r.upperBound - 1, r.lowerBound, 0), origin.count - 1)] + 1
            return (lower..<max(upper, lower + 1)).clamped(to: spanned)
        }
        let ref = GlobalReference(range: spanned, expression: source, opaque: opaque, castBefore: nil, module: nil)
        let entry: String, linkOffset: UInt64, head: Value, headType: CType, module: String?
        do {
            let expr: Expr
            do {
                expr = try ExpressionParser.parse(source, isTypeName: { [resolver] in resolver.isTypeName($0) }, opaque: opaque)
            } catch {
                guard case let .at(message, _, range) = error else { throw self.error(error.message, ref, chars, file) }
                throw ScriptScanner.error(message, at: scriptRange(range), chars: chars, file: file)
            }
            guard case let .container(_, typeName?, headExpr, member, nil, _) = expr else { throw at(w.header, "expected \(usage)") }
            module = Resolver.module(of: headExpr)
            let entryType = try resolver.resolveType(typeName, near: module, expr, source)
            guard let (_, t) = try entryType.record(), let spelled = ScriptGenerator.recordName(t) else {
                throw at(w.arguments[0], "TYPE is the entries' struct (struct NAME), not \(entryType.name)")
            }
            entry = spelled
            linkOffset = try resolver.linkOffset(entryType, member, 0..<source.count, source)
            resolver.clearWarnings()
            let r = try resolver.resolve(headExpr, source)
            notes += resolver.warnings.filter { !notes.contains($0) }
            if case .pointer(let target) = try r.type.resolved() {
                headType = target
                head = try resolver.rvalue(r, headExpr, source)
            } else {
                guard let place = r.place else {
                    if untyped, case .opaque = headExpr {
                        throw at(w.arguments[1], "HEAD is bpftrace's and kreach does not know its type: cast it, as in (struct \(helper.headTypes.first ?? "list_head") *)\(String(chars[w.arguments[1]]))")
                    }
                    throw at(w.arguments[1], "the head has no address (a value, not an object in memory)")
                }
                headType = r.type
                head = place
            }
        } catch let e as ExpressionError {
            guard case let .at(message, _, range) = e else { throw scriptError(e, ref, chars, file) }
            throw ScriptScanner.error(message, at: scriptRange(range), chars: chars, file: file)
        }
        let headName = (try? headType.record()).flatMap { $0?.1.name } ?? ""
        guard helper.headTypes.contains(headName) else {
            let wanted = helper.headTypes.map { "struct " + $0 }.joined(separator: " or ")
            throw at(w.arguments[1], "needs a \(wanted) (or a pointer to one), not \(headType.name)")
        }

        // The link members' offsets, from vmlinux BTF.
        let vmlinux = resolver.types.vmlinux
        let pointer = ScriptGenerator.integerType(size: Int(vmlinux.pointerSize), signed: false) ?? "uint64"
        let first: UInt64, next: UInt64
        do {
            switch chain {
            case .ring(let link):
                first = try ContainerHelper.member(link, in: "list_head", vmlinux: vmlinux).offset
                next = first
            case let .null(headStruct, node), let .nulls(headStruct, node):
                first = try ContainerHelper.member("first", in: headStruct, vmlinux: vmlinux).offset
                next = try ContainerHelper.member("next", in: node, vmlinux: vmlinux).offset
            }
        } catch {
            throw at(w.header, "\(error)")
        }

        // Hidden variables: $__kreach_wN_h (the head), _p (the next node), _n (entries visited).
        let v = "$__kreach_w\(number)_"
        let (h, p, n) = (v + "h", v + "p", v + "n")
        func plus(_ base: String, _ offset: UInt64, _ op: String = "+") -> String {
            offset == 0 ? base : "(\(base) \(op) 0x\(String(offset, radix: 16)))"
        }
        let more: String  // the chain goes on from p
        switch chain {
        case .ring: more = "\(p) != \(h) && \(p) != 0"
        case .null: more = "\(p) != 0"
        case .nulls: more = "(\(p) & 1) == 0 && \(p) != 0"
        }
        // The cursor moves first, so `continue` in the body can't loop forever.
        let header = "\(h) = \(ScriptGenerator.text(head)); \(p) = *(\(pointer) *)\(plus(h, first)); \(n) = 0; "
            + "while (\(n) < \(bound) && \(more)) { "
            + "\(variable) = (\(entry) *)\(plus(p, linkOffset, "-")); \(p) = *(\(pointer) *)\(plus(p, next)); \(n)++;"
        var after = " if (\(n) == \(bound) && \(more)) { printf(\"kreach: note: \(helper.macro) stopped after \(bound) entries\\n\"); }"
        if case .null = chain {} else {
            after = " if (\(p) == 0) { printf(\"kreach: note: \(helper.macro): NULL next pointer after %d entries\\n\", \(n)); }" + after
        }
        return (header, after, module)
    }
}
