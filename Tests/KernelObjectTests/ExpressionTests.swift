import XCTest
@testable import KernelObject

/// The expression parser: shapes of the tree, and errors with a caret under the bad token.
final class ExpressionTests: XCTestCase {
    func parse(_ s: String, types: Set<String> = ["pid_t", "u64"]) throws -> Expr {
        try ExpressionParser.parse(s, isTypeName: { types.contains($0) })
    }

    func shape(_ e: Expr) -> String {
        switch e {
        case .symbol(let n, _): return n
        case .number(let n, _): return String(n)
        case .current: return "current"
        case let .member(b, n, arrow, _): return "(\(shape(b))\(arrow ? "->" : ".")\(n))"
        case let .index(b, i, _): return "\(shape(b))[\(shape(i))]"
        case .deref(let b, _): return "*\(shape(b))"
        case .addressOf(let b, _): return "&\(shape(b))"
        case .negate(let b, _): return "-\(shape(b))"
        case let .cast(t, b, _): return "((\(t.words.joined(separator: " "))\(String(repeating: "*", count: t.pointers))\(t.arrayCount.map { "[\($0)]" } ?? ""))\(shape(b)))"
        case let .perCPU(v, c, _): return "per_cpu(\(shape(v)),\(shape(c)))"
        case let .container(h, t, head, m, _, _): return "\(h)(\(t?.words.joined(separator: " ") ?? ""),\(shape(head)),\(m))"
        case let .perCPUSum(v, _): return "per_cpu_sum(\(shape(v)))"
        case let .containerOf(p, t, m, _): return "container_of(\(shape(p)),\(t.words.joined(separator: " ")),\(m))"
        case .opaque(let t, _): return "opaque(\(t))"
        }
    }

    func testShapes() throws {
        XCTAssertEqual(shape(try parse("current->nsproxy->uts_ns->name.release")), "((((current->nsproxy)->uts_ns)->name).release)")
        XCTAssertEqual(shape(try parse("lockd:nlm_files[3].first")), "(lockd:nlm_files[3].first)")
        XCTAssertEqual(shape(try parse("lockd`nlm_files")), "lockd:nlm_files")
        XCTAssertEqual(shape(try parse("`pid_max")), "vmlinux:pid_max")
        XCTAssertEqual(shape(try parse("lockd:nlm_blocked#2")), "lockd:nlm_blocked#2")
        XCTAssertEqual(shape(try parse("nlm_blocked@ffffffffc068b590")), "nlm_blocked@ffffffffc068b590")
        XCTAssertEqual(shape(try parse("*(struct nlm_file *)0xffff888003a8c000")), "*((struct nlm_file*)\(UInt64(0xffff888003a8c000)))")
        XCTAssertEqual(shape(try parse("(unsigned long)brd:rd_size")), "((unsigned long)brd:rd_size)")
        XCTAssertEqual(shape(try parse("(u64)x")), "((u64)x)")
        XCTAssertEqual(shape(try parse("(pid_t)x")), "((pid_t)x)")
        XCTAssertEqual(shape(try parse("(x)")), "x", "a parenthesized name that is not a type")
        XCTAssertEqual(shape(try parse("(lockd:struct nlm_file **)p")), "((struct nlm_file**)p)")
        XCTAssertEqual(shape(try parse("(char [16])x")), "((char[16])x)")
        XCTAssertEqual(shape(try parse("&init_task.tasks")), "&(init_task.tasks)")
        XCTAssertEqual(shape(try parse("-1")), "-1")
        XCTAssertEqual(shape(try parse("per_cpu(runqueues, 1).nr_running")), "(per_cpu(runqueues,1).nr_running)")
        XCTAssertEqual(shape(try parse("list_for_each_entry(struct task_struct, &init_task.tasks, tasks)")),
                       "list_for_each_entry(struct task_struct,&(init_task.tasks),tasks)")
        // Helpers without a MEMBER (xa_for_each, idr_for_each_entry, mt_for_each) or a TYPE (for_each_cpu).
        XCTAssertEqual(shape(try parse("xa_for_each(void *, &m->i_pages)")), "xa_for_each(void,&(m->i_pages),)")
        XCTAssertEqual(shape(try parse("for_each_cpu(&current->cpus_mask)")), "for_each_cpu(,&(current->cpus_mask),)")
        XCTAssertEqual(shape(try parse("container_of(p->next, struct task_struct, se.run_node)->pid")),
                       "(container_of((p->next),struct task_struct,se.run_node)->pid)")
        XCTAssertEqual(shape(try parse("per_cpu_sum(runqueues.nr_running)")), "per_cpu_sum((runqueues.nr_running))")
    }

    func testErrorsPointAtTheBadToken() {
        let cases: [(String, String, String)] = [
            ("current->", "expected a member name, found end of expression", "           ^"),
            ("a +", "unexpected character '+'", "    ^"),
            ("a[1", "expected ']', found end of expression", "     ^"),
            ("(struct)x", "expected a struct name, found ')'", "         ^"),
            ("x y", "unexpected 'y' after the expression", "    ^"),
            ("0xzz", "bad number 0xzz", "  ^~~~"),
            ("lockd:", "expected a symbol name after ':', found end of expression", "        ^"),
            ("per_cpu(x)", "expected ',', found ')'", "           ^"),
            ("xa_for_each(void *, x, m)", "expected ')', found ','", "                       ^"),
            ("container_of(p, struct s)", "expected ',', found ')'", "                          ^"),
            ("", "expected a name, number or '(', found end of expression", "  ^"),
        ]
        for (source, message, caret) in cases {
            XCTAssertThrowsError(try parse(source), source) { error in
                let lines = "\(error)".split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
                XCTAssertEqual(lines.first, message, source)
                XCTAssertEqual(lines.count, 3, "\(error)")
                if lines.count == 3 {
                    XCTAssertEqual(lines[1], "  " + source)
                    XCTAssertEqual(lines[2], caret, source)
                }
            }
        }
    }

    func testBaseTypeNames() {
        XCTAssertEqual(Evaluator.baseTypeName(["unsigned", "long"]), "long unsigned int")
        XCTAssertEqual(Evaluator.baseTypeName(["long"]), "long int")
        XCTAssertEqual(Evaluator.baseTypeName(["unsigned"]), "unsigned int")
        XCTAssertEqual(Evaluator.baseTypeName(["long", "long"]), "long long int")
        XCTAssertEqual(Evaluator.baseTypeName(["unsigned", "char"]), "unsigned char")
        XCTAssertEqual(Evaluator.baseTypeName(["short"]), "short int")
        XCTAssertEqual(Evaluator.baseTypeName(["int"]), "int")
        XCTAssertNil(Evaluator.baseTypeName(["pid_t"]))
    }
}
