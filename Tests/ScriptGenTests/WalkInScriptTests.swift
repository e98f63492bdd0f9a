import Foundation
import XCTest
import KernelObject
import KernelSource
@testable import ScriptGen
import KreachTestSupport

/// Container walks in scripts. The chain walkers (list, hlist, llist, hlist_nulls) are statements,
/// `NAME(TYPE, HEAD, MEMBER, $VAR[, MAX]) { BODY }`, that become bounded bpftrace `while` loops: expanded
/// against the Debian 6.1 capture (addresses from its kallsyms file, offsets from bpftool's raw BTF dump) and
/// run by bpftrace on the live host (the task list, checked against /proc). The walkers that need a stack
/// or a loop over an array of heads stay in `show`: a one-line error saying why.
final class WalkInScriptTests: XCTestCase, CaptureOracle {
    func generator() throws -> ScriptGenerator {
        try ScriptGenerator(kernel: try Kernel(source: .snapshot(try DebianCapture.directory())))
    }

    /// The first line of the error expanding `script`.
    func firstErrorLine(_ script: String, _ g: ScriptGenerator? = nil) throws -> String? {
        do {
            _ = try (g ?? generator()).expand(script, file: "w.bt")
            return nil
        } catch {
            return "\(error)".split(separator: "\n").first.map(String.init)
        }
    }

    func testWalkersThatAreNoChainSayWhyTheyStayInShow() throws {
        let g = try generator()
        let why: [ContainerHelper: String] = [
            .rbtreeInorderForEachEntry: "rbtree walks need a stack",
            .xaForEach: "xarray and idr walks descend a tree of nodes",
            .idrForEachEntry: "xarray and idr walks descend a tree of nodes",
            .mtForEach: "maple tree walks descend a tree of nodes",
            .hashForEach: "hash_for_each walks an array of heads (a loop per bucket): only `kreach show` walks them; in a script, walk one bucket: hlist_for_each_entry(",
            .forEachCpu: "for_each_cpu yields bit numbers from a bitmap, not a chain",
            .forEachSetBit: "for_each_set_bit yields bit numbers from a bitmap, not a chain",
        ]
        for helper in ContainerHelper.allCases {
            let line = try firstErrorLine("BEGIN {\n\t@n = count(); \(helper.macro) (struct task_struct, &`init_task.children, sibling);\n}\n", g)
            if let reason = why[helper] {
                XCTAssertTrue(line?.hasPrefix("w.bt:2:16: \(helper.macro): \(reason)") == true, "\(helper): \(line ?? "no error")")
                XCTAssertTrue(line?.contains("only `kreach show` walks") == true, "\(helper): \(line ?? "no error")")
            } else {
                // A chain walker without its body: it is a statement.
                XCTAssertEqual(line, "w.bt:2:16: \(helper.macro) is a statement in a script, followed by its body: \(helper.macro)(TYPE, HEAD, MEMBER, $VAR[, MAX]) { ... }")
            }
        }
        // A name that only starts like one, or a map of that name without a call, is bpftrace's business.
        XCTAssertNoThrow(try g.expand("BEGIN { @hash_for_each_x = 1; @for_each_cpu = 2; }", file: "w.bt"))
    }

    /// The loop `kreach gen` writes for a walk whose head is at `head` (bpftrace text), its first node read at
    /// `first` from it, the next at `next` from each node; `more` is the chain's go-on test on the cursor.
    func loop(_ n: Int, head: String, first: UInt64, next: UInt64, more: String, bound: Int, variable: String,
              entry: String, link: UInt64, body: String, macro: String, nullNote: Bool) -> String {
        let v = "$__kreach_w\(n)_"
        func plus(_ b: String, _ o: UInt64, _ op: String = "+") -> String { o == 0 ? b : "(\(b) \(op) \(hex(o)))" }
        let test = more.replacingOccurrences(of: "P", with: v + "p").replacingOccurrences(of: "H", with: v + "h")
        var out = "\(v)h = \(head); \(v)p = *(uint64 *)\(plus(v + "h", first)); \(v)n = 0; while (\(v)n < \(bound) && \(test)) { "
            + "\(variable) = (\(entry) *)\(plus(v + "p", link, "-")); \(v)p = *(uint64 *)\(plus(v + "p", next)); \(v)n++; \(body) }"
        if nullNote { out += " if (\(v)p == 0) { printf(\"kreach: note: \(macro): NULL next pointer after %d entries\\n\", \(v)n); }" }
        return out + " if (\(v)n == \(bound) && \(test)) { printf(\"kreach: note: \(macro) stopped after \(bound) entries\\n\"); }"
    }

    func testListWalksBecomeBoundedLoopsFromTheHeadThroughNextOrPrev() throws {
        let modules = try address("vmlinux:modules"), list = try offset("module", "list")
        let next = try offset("list_head", "next"), prev = try offset("list_head", "prev")
        let script = "BEGIN {\n\tlist_for_each_entry(vmlinux:struct module, (struct list_head *)&`modules, list, $m) { printf(\"%s\\n\", $m->name); }\n"
            + "\tlist_for_each_entry_reverse(vmlinux:struct module, (struct list_head *)&`modules, list, $m, 5) { @n = count(); }\n}\n"
        let out = try generator().expand(script, file: "w.bt").split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        XCTAssertEqual(out, [
            "BEGIN {",
            "\t" + loop(1, head: hex(modules), first: next, next: next, more: "P != H && P != 0", bound: 1024, variable: "$m",
                        entry: "struct module", link: list, body: "printf(\"%s\\n\", $m->name);", macro: "list_for_each_entry", nullNote: true),
            "\t" + loop(2, head: hex(modules), first: prev, next: prev, more: "P != H && P != 0", bound: 5, variable: "$m",
                        entry: "struct module", link: list, body: "@n = count();", macro: "list_for_each_entry_reverse", nullNote: true),
            "}", "",
        ])
    }

    /// A bucket of a module's hash table, chosen by bpftrace (`[$i]`): the module's struct gets its C
    /// definition and the script its unload guard; the body spans lines, which keep their numbers.
    func testHlistWalkOfAModuleBucketKeepsLinesAndGetsTheUnloadGuard() throws {
        let files = try address("lockd:nlm_files"), first = try offset("hlist_head", "first"), next = try offset("hlist_node", "next")
        let lockd = try BpftoolRawDump(file: try DebianCapture.directory() + "/btf/lockd", base: try DebianCapture.directory() + "/btf/vmlinux")
        let link = try offset("nlm_file", "f_list", dump: lockd)
        let script = "BEGIN {\n\t$i = 3;\n\thlist_for_each_entry(lockd:struct nlm_file, &((struct hlist_head *)&lockd`nlm_files)[$i], f_list, $f) {\n\t\t@n = count();\n\t}\n\texit();\n}\n"
        let out = try generator().expand(script, file: "w.bt").split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let expected = loop(1, head: "(\(hex(files)) + (($i) * 8))", first: first, next: next, more: "P != 0", bound: 1024, variable: "$f",
                            entry: "struct nlm_file", link: link, body: "", macro: "hlist_for_each_entry", nullNote: false)
        // The loop's head on the macro's line, its end after the body's `}`, four lines down.
        let cut = try XCTUnwrap(expected.range(of: "$__kreach_w1_n++;")).upperBound
        XCTAssertEqual(out[2], "\t" + String(expected[..<cut]))
        XCTAssertEqual(out[3], "\t\t@n = count();")
        XCTAssertEqual(out[4], "\t" + String(expected[cut...]).trimmingCharacters(in: .whitespaces))
        XCTAssertEqual(out[5], "\texit();")
        XCTAssertTrue(out[0].hasPrefix("struct nlm_file { struct hlist_node f_list;"), out[0])
        XCTAssertTrue(out.contains("tracepoint:module:module_free /str(args->name) == \"lockd\"/ {"), out.joined(separator: "\n"))
    }

    func testLlistAndHlistNullsWalksEndAtNullAndAtTheNullsMarker() throws {
        let g = try generator()
        let first = try offset("llist_head", "first"), next = try offset("llist_node", "next")
        let link = try offset("irq_work", "node") + offset("__call_single_node", "llist")
        let script = "BEGIN { llist_for_each_entry(struct irq_work, (struct llist_head *)&`init_task, node.llist, $w, 16) { @n = count(); } }"
        XCTAssertEqual(try g.expand(script, file: "w.bt"),
                       "BEGIN { " + loop(1, head: hex(try address("vmlinux:init_task")), first: first, next: next, more: "P != 0", bound: 16,
                                         variable: "$w", entry: "struct irq_work", link: link, body: "@n = count();",
                                         macro: "llist_for_each_entry", nullNote: false) + " }")
        // hlist_nulls: the chain ends at an odd pointer (is_a_nulls); NULL on the way is a broken chain.
        let nulls = try g.expand("BEGIN { hlist_nulls_for_each_entry(struct sock, &((struct inet_hashinfo)`tcp_hashinfo).ehash[$i].chain, __sk_common.skc_nulls_node, $s) { @n = count(); } }", file: "w.bt")
        XCTAssertTrue(nulls.contains("while ($__kreach_w1_n < 1024 && ($__kreach_w1_p & 1) == 0 && $__kreach_w1_p != 0) { $s = (struct sock *)("), nulls)
        XCTAssertTrue(nulls.contains("if ($__kreach_w1_p == 0) { printf(\"kreach: note: hlist_nulls_for_each_entry: NULL next pointer after %d entries\\n\""), nulls)
    }

    /// A walk in a walk's body: each its own hidden variables; walks in comments and strings are text.
    func testNestedWalksHaveTheirOwnVariables_CommentsAndStringsAreNotWalks() throws {
        let script = "BEGIN {\n\tlist_for_each_entry(struct task_struct, &current->children, sibling, $c) {\n"
            + "\t\tlist_for_each_entry(struct task_struct, &$c->children, sibling, $g, 8) { @n = count(); } printf(\"} /* {\\n\"); // }\n\t}\n"
            + "\t// list_for_each_entry(struct task_struct, &current->tasks, tasks, $x) {\n\tprintf(\"hlist_for_each_entry(a, b, c, $d) {\\n\");\n}\n"
        // &$c->children: the enclosing walk's $c is a struct task_struct *, its address taken as bytes (uint64).
        let children = try hex(offset("task_struct", "children"))
        let out = try generator().expand(script, file: "w.bt").split(separator: "\n", omittingEmptySubsequences: false)
        XCTAssertEqual(out.count, script.split(separator: "\n", omittingEmptySubsequences: false).count)
        XCTAssertTrue(out[1].hasPrefix("\t$__kreach_w1_h = (((uint64)curtask) + \(children)); "), String(out[1]))
        XCTAssertTrue(out[2].hasPrefix("\t\t$__kreach_w2_h = (((uint64)$c) + \(children)); ") && out[2].contains("$__kreach_w2_n < 8"), String(out[2]))
        XCTAssertTrue(out[2].hasSuffix("stopped after 8 entries\\n\"); } printf(\"} /* {\\n\"); // }"), String(out[2]))
        XCTAssertTrue(out[3].hasPrefix("\t} if ($__kreach_w1_p == 0)"), String(out[3]))
        XCTAssertEqual(out[4], "\t// list_for_each_entry(struct task_struct, &current->tasks, tasks, $x) {")
        XCTAssertEqual(out[5], "\tprintf(\"hlist_for_each_entry(a, b, c, $d) {\\n\");")
    }

    /// HEAD from bpftrace's own values: curtask and an enclosing walk's $VAR are typed (struct task_struct *, the
    /// walk's TYPE *); argN, retval and other $VARs need a cast, and each is used as bytes through uint64, since
    /// bpftrace scales a typed pointer's arithmetic by the pointee's size.
    func testBpftraceValuesAsTheHeadAreTypedOrCastAndAddBytes() throws {
        let g = try generator()
        let children = try hex(offset("task_struct", "children"))
        func head(_ text: String) throws -> String {
            let out = try g.expand("kprobe:f { list_for_each_entry(struct task_struct, \(text), sibling, $c) { @n = count(); } }", file: "w.bt")
            guard let r = out.range(of: "$__kreach_w1_h = "), let end = out[r.upperBound...].range(of: "; ") else { return out }
            return String(out[r.upperBound..<end.lowerBound])
        }
        XCTAssertEqual(try head("&curtask->children"), "(((uint64)curtask) + \(children))")
        XCTAssertEqual(try head("&current->children"), "(((uint64)curtask) + \(children))")
        XCTAssertEqual(try head("(struct list_head *)arg0"), "((uint64)arg0)")
        XCTAssertEqual(try head("&((struct task_struct *)$t)->children"), "(((uint64)$t) + \(children))")
        XCTAssertEqual(try head("&((struct task_struct *)retval)->children"), "(((uint64)retval) + \(children))")
        let line = { (text: String) in try self.firstErrorLine("kprobe:f { list_for_each_entry(struct task_struct, \(text), sibling, $c) { } }", g) }
        XCTAssertEqual(try line("arg1"), "w.bt:1:52: list_for_each_entry: HEAD is bpftrace's and kreach does not know its type: cast it, as in (struct list_head *)arg1")
        XCTAssertEqual(try line("&$t->children"), "w.bt:1:53: list_for_each_entry: $t is bpftrace's and kreach does not know its type: cast it, as in ((struct task_struct *)$t)->children (an enclosing walk's $VAR and curtask need none)")
        XCTAssertEqual(try line("&((struct task_struct *)arg2)->nosuch"), "w.bt:1:54: struct task_struct has no member nosuch")
        // A member named like a builtin is a member; an enclosing walk's variable of another walk is still untyped here.
        XCTAssertEqual(try firstErrorLine("BEGIN { list_for_each_entry(struct task_struct, &current->children, sibling, $a) { } list_for_each_entry(struct task_struct, &$a->children, sibling, $b) { } }", g),
                       "w.bt:1:127: list_for_each_entry: $a is bpftrace's and kreach does not know its type: cast it, as in ((struct task_struct *)$a)->children (an enclosing walk's $VAR and curtask need none)")
    }

    func testBadWalkStatementsAreOneLineErrorsAtTheirArgument() throws {
        let g = try generator()
        func line(_ statement: String) throws -> String? { try firstErrorLine("BEGIN { \(statement) }", g) }
        let usage = "(TYPE, HEAD, MEMBER, $VAR[, MAX]) { ... }"
        XCTAssertEqual(try line("list_for_each_entry(struct task_struct, &current->tasks, tasks) { }"),
                       "w.bt:1:9: list_for_each_entry: takes 4 or 5 arguments in a script: list_for_each_entry\(usage)")
        XCTAssertEqual(try line("list_for_each_entry(struct task_struct, &current->tasks, tasks, $__kreach_w1_p) { }"),
                       "w.bt:1:73: list_for_each_entry: the 4th argument is the loop variable, a $name not starting with $__kreach: list_for_each_entry\(usage)")
        XCTAssertEqual(try line("list_for_each_entry(struct task_struct, &current->tasks, tasks, t) { }"),
                       "w.bt:1:73: list_for_each_entry: the 4th argument is the loop variable, a $name not starting with $__kreach: list_for_each_entry\(usage)")
        for bad in ["0", "4097", "$n", "1e3"] {
            XCTAssertEqual(try line("list_for_each_entry(struct task_struct, &current->tasks, tasks, $t, \(bad)) { }"),
                           "w.bt:1:77: list_for_each_entry: MAX is a number from 1 to 4096 (the BPF verifier walks every iteration), not \(bad)")
        }
        XCTAssertEqual(try line("hlist_for_each_entry(struct task_struct, &current->tasks, tasks, $t) { }"),
                       "w.bt:1:50: hlist_for_each_entry: needs a struct hlist_head (or a pointer to one), not struct list_head")
        XCTAssertEqual(try line("list_for_each_entry(int, &current->tasks, tasks, $t) { }"),
                       "w.bt:1:29: list_for_each_entry: TYPE is the entries' struct (struct NAME), not int")
        XCTAssertEqual(try line("list_for_each_entry(struct task_struct, &current->tasks, nosuch, $t) { }"),
                       "w.bt:1:9: struct task_struct has no member nosuch")
        XCTAssertEqual(try line("list_for_each_entry(struct task_struct, &current->tasks, tasks, $t) @n = 1;"),
                       "w.bt:1:9: list_for_each_entry is a statement in a script, followed by its body: list_for_each_entry\(usage)")
        XCTAssertEqual(try firstErrorLine("BEGIN { list_for_each_entry(struct task_struct, &current->tasks, tasks, $t) { @n = 1;", g),
                       "w.bt:1:77: list_for_each_entry: its body has no closing '}'")
        XCTAssertEqual(try line("list_for_each_entry(struct task_struct, &current->tasks,\n tasks, $t) { }"),
                       "w.bt:1:9: list_for_each_entry: its arguments end on their line with ')': list_for_each_entry\(usage)")
    }

    /// The live task list through bpftrace, from the probed task (BEGIN runs in bpftrace's own process):
    /// every process /proc lists before and after the run is walked except pid 1 (the body `continue`s past
    /// it) and bpftrace (the head); the reverse walk, bounded at 3, gives the forward walk's last 3 and the note.
    func testTheTaskListWalkedByBpftraceMatchesProc() throws {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: bpftrace")) }
        guard Run.available("bpftrace") else { throw XCTSkip(Host.skipReason("bpftrace is not installed")) }
        let g = try ScriptGenerator(kernel: try Kernel(source: .live))
        let script = try g.expand("""
            BEGIN {
            \tprintf("self %d\\n", pid);
            \tlist_for_each_entry(struct task_struct, &current->tasks, tasks, $t) { if ($t->pid == 1) { continue; } printf("task %d\\n", $t->pid); }
            \tlist_for_each_entry_reverse(struct task_struct, &current->tasks, tasks, $t, 3) { printf("last %d\\n", $t->pid); }
            \tlist_for_each_entry(struct task_struct, &curtask->real_parent->children, sibling, $k, 16) { list_for_each_entry(struct task_struct, &$k->real_parent->children, sibling, $s, 16) { printf("nest %d %d %s\\n", $k->pid, $s->pid, $s->comm); } }
            \texit();
            }
            """, file: "w.bt")
        func processes() throws -> Set<Int> {
            Set(try FileManager.default.contentsOfDirectory(atPath: "/proc").compactMap { Int($0) })
        }
        let before = try processes()
        let r = try Run.command(["bpftrace", "-e", script], timeout: 60)
        let after = try processes()
        XCTAssertEqual(r.status, 0, r.stderr)
        var walked: [Int] = [], last: [Int] = [], notes: [String] = [], own: Int?
        for line in r.stdout.split(separator: "\n") {
            let f = line.split(separator: " ")
            switch f.first {
            case "self": own = f.last.flatMap { Int($0) }
            case "task": walked += f.last.flatMap { Int($0) }.map { [$0] } ?? []
            case "last": last += f.last.flatMap { Int($0) }.map { [$0] } ?? []
            default: if line.hasPrefix("kreach: note:") { notes.append(String(line)) }
            }
        }
        let bpftrace = try XCTUnwrap(own, r.stdout)
        XCTAssertEqual(Set(walked).count, walked.count, "a task twice: \(walked)")
        // Processes there throughout (and not bpftrace itself, the head) are all walked, pid 1 skipped.
        let stable = before.intersection(after).subtracting([1, bpftrace])
        XCTAssertEqual(stable.subtracting(walked), [], "walked: \(walked)")
        XCTAssertFalse(walked.contains(1))
        XCTAssertFalse(walked.contains(bpftrace))
        // Every walked task is the idle task (pid 0, init_task, the list's anchor), a process /proc listed, or
        // one started during the run (a pid above all that were listed before).
        let newest = before.max() ?? 0
        XCTAssertEqual(walked.filter { $0 != 0 && !before.contains($0) && !after.contains($0) && $0 <= newest }, [], "walked: \(walked)")
        XCTAssertTrue(walked.contains(0), "init_task is on the list: \(walked)")
        // Backwards from the same head: the forward walk's end, reversed, cut at 3 with show's note.
        XCTAssertEqual(last, Array(walked.suffix(3).reversed()), r.stdout)
        XCTAssertEqual(notes, ["kreach: note: list_for_each_entry_reverse stopped after 3 entries"], r.stdout)
        // HEADs from bpftrace's values: this process's children (bpftrace alone), then, from each, its parent's
        // children again: bpftrace, by its pid and name.
        XCTAssertEqual(r.stdout.split(separator: "\n").filter { $0.hasPrefix("nest ") }, ["nest \(bpftrace) \(bpftrace) bpftrace"], r.stdout)
    }
}
