import Foundation
import XCTest
import Memory
@testable import KernelObject
import KernelSource
import KreachSupport
import KreachTestSupport

/// Reading the live kernel through BPF, checked against what /proc and uname say.
final class LiveObjectTests: XCTestCase {
    func evaluator() throws -> (Evaluator, ObjectFormatter) {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: BPF needs CAP_BPF + CAP_PERFMON, kallsyms CAP_SYSLOG")) }
        let ev = try Evaluator(kernel: try Kernel(source: .live), memory: try BPFMemory())
        return (ev, ObjectFormatter(evaluator: ev))
    }

    func object(_ ev: Evaluator, _ s: String) throws -> Object {
        guard case .object(let o) = try ev.evaluate(s) else { throw FixtureError("\(s) is not one object") }
        return o
    }

    func testCurrentIsThisThread() throws {
        let (ev, fmt) = try evaluator()
        let tid = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self").split(separator: "/").last.map(String.init)
        XCTAssertEqual(try fmt.compact(try object(ev, "current->pid")), tid)
        XCTAssertEqual(try fmt.compact(try object(ev, "current->tgid")), String(getpid()))
        XCTAssertEqual(try fmt.text(try object(ev, "current->comm")), "(char [16])\"" + (try FileBytes.readText("/proc/thread-self/comm")) + "\"")
        var u = utsname()
        uname(&u)
        let release = withUnsafeBytes(of: u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        XCTAssertEqual(try fmt.compact(try object(ev, "current->nsproxy->uts_ns->name.release")), "\"\(release)\"")
        // The same through casts and address arithmetic.
        XCTAssertEqual(try fmt.compact(try object(ev, "((struct task_struct *)current)->pid")), tid)
        XCTAssertEqual(try fmt.compact(try object(ev, "(*current).pid")), tid)
        XCTAssertEqual(try fmt.compact(try object(ev, "*&current->pid")), tid)
        XCTAssertEqual(try fmt.compact(try object(ev, "current->comm[0]")), String(try FileBytes.readText("/proc/thread-self/comm").utf8.first ?? 0))
        XCTAssertEqual(try fmt.compact(try object(ev, "(long)current->pid")), tid)
    }

    /// Walking the task list from current yields the processes in /proc (allowing for ones that come and go).
    func testTaskListWalkMatchesProc() throws {
        let (ev, fmt) = try evaluator()
        func procPids() throws -> Set<String> {
            Set(try FileManager.default.contentsOfDirectory(atPath: "/proc").filter { $0.allSatisfy(\.isNumber) })
        }
        let before = try procPids()
        guard case .entries(let entries, _) = try ev.evaluate("list_for_each_entry(struct task_struct, &current->tasks, tasks)") else {
            return XCTFail("not a walk")
        }
        let after = try procPids()
        let tgids = try entries.map { try fmt.compact(try ev.evaluate(field: "tgid", of: $0)) }
        XCTAssertEqual(tgids.filter { $0 == "0" }.count, 1, "init_task (swapper) is on the list once")
        var walked = Set(tgids)
        walked.remove("0")               // but not in /proc
        // The head is current's own list node: as in the kernel's macro it is not an entry, every other task is.
        let me = String(getpid())
        XCTAssertFalse(walked.contains(me), "the head's own task is not an entry")
        walked.insert(me)
        let stable = before.intersection(after)
        XCTAssertTrue(stable.isSubset(of: walked), "in /proc but not walked: \(stable.subtracting(walked).sorted())")
        XCTAssertTrue(walked.isSubset(of: before.union(after)), "walked but never in /proc: \(walked.subtracting(before.union(after)).sorted())")
        XCTAssertGreaterThan(entries.count, 10)
        // comm of each entry is a string, and pid 1 is there.
        XCTAssertTrue(walked.contains("1"))
        // From another head (the parent's thread-group leader), current is an entry.
        guard case .entries(let fromParent, _) = try ev.evaluate("list_for_each_entry(struct task_struct, &current->real_parent->group_leader->tasks, tasks)") else {
            return XCTFail("not a walk")
        }
        let currentAddress = try object(ev, "current").scalar(ev.memory)
        XCTAssertTrue(fromParent.contains { $0.address == currentAddress }, "current is walked from its parent's node")
        ev.maxEntries = 5
        guard case .entries(let few, _) = try ev.evaluate("list_for_each_entry(struct task_struct, &current->tasks, tasks)") else { return XCTFail() }
        XCTAssertEqual(few.count, 5)
        XCTAssertTrue(ev.warnings.contains { $0.contains("stopped after 5 entries") })
    }

    /// hlist: the PIDTYPE_PID list of current's struct pid holds exactly current.
    func testHlistWalkFindsCurrent() throws {
        let (ev, fmt) = try evaluator()
        guard case .entries(let entries, _) = try ev.evaluate("hlist_for_each_entry(struct task_struct, &current->thread_pid->tasks[0], pid_links[0])") else {
            return XCTFail("not a walk")
        }
        XCTAssertEqual(entries.count, 1)
        XCTAssertEqual(try entries.first.map { try fmt.compact(try ev.evaluate(field: "pid", of: $0)) }, try fmt.compact(try object(ev, "current->pid")))
        XCTAssertEqual(entries.first?.address, try object(ev, "current").scalar(ev.memory))
        XCTAssertThrowsError(try ev.evaluate("hlist_for_each_entry(struct task_struct, &current->thread_pid->tasks[0], pid_links[9])")) {
            XCTAssertTrue("\($0)".contains("not an array with that many elements"), "\($0)")
        }
    }

    func testStructPrintingAndJSON() throws {
        let (ev, fmt) = try evaluator()
        let text = try fmt.text(try object(ev, "*current->nsproxy->uts_ns"))
        XCTAssertTrue(text.hasPrefix("*(struct uts_namespace *)0x"), text)
        XCTAssertTrue(text.contains(".name = (struct new_utsname){\n\t\t.sysname = (char [65])\"Linux\",\n"), text)
        let json = try fmt.json(try object(ev, "current->nsproxy->uts_ns->name")).compact
        XCTAssertTrue(json.hasPrefix("{\"sysname\":\"Linux\",\"nodename\":"), json)
        fmt.options.depth = 0
        XCTAssertTrue(try fmt.text(try object(ev, "*current->nsproxy->uts_ns")).hasSuffix("= { ... }"))
    }

    func testBadInputsAreErrorsNamingThePart() throws {
        let (ev, _) = try evaluator()
        let cases: [(String, String)] = [
            ("no_such_symbol_xyz", "no symbol matches no_such_symbol_xyz"),
            ("current->no_such_member", "struct task_struct has no member no_such_member"),
            ("current.pid", "use '->'"),
            ("(struct no_such_struct *)current", "no type matches struct no_such_struct"),
            ("*(int *)0", "NULL pointer dereference"),
            ("*(int *)0x10", "not a kernel address"),
            ("*(int *)0x" + String(KernelFacts.kernelHalfStart + 0x1000, radix: 16), "not mapped"),  // the guard hole
            ("current->pid->x", "'->' needs a pointer"),
            ("current->commm", "has no member commm (did you mean comm?)"),
            ("current->comm.x", "has no member x"),
            ("per_cpu(current, 0)", "per_cpu() takes a per-CPU variable's name"),
            ("(struct task_struct)5", "can't cast a computed value"),
        ]
        for (source, fragment) in cases {
            XCTAssertThrowsError(try ev.evaluate(source).object(), source) { error in
                XCTAssertTrue("\(error)".contains(fragment), "\(source): \(error)")
            }
        }
    }

    /// Where each loaded module's memory lies, read from its struct module (mem[] since 6.4, core_layout before),
    /// holds the module's sections as /sys/module/M/sections gives them and every symbol /proc/kallsyms lists for it.
    func testModuleMemoryMapHoldsEachModulesSectionsAndSymbols() throws {
        let (ev, _) = try evaluator()
        let modules = try ev.kernel.modules()
        guard !modules.isEmpty else { throw XCTSkip(Host.skipReason("no module is loaded on this kernel (the VM suite's guests have some)")) }
        let map = try ModuleMemoryMap(vmlinux: ev.types.vmlinux)
        var symbols: [String: [UInt64]] = [:]
        // The module lines of /proc/kallsyms ("ADDR t name\t[module]"), by grep (the file is bigger than FileBytes reads).
        let lines = try Run.command(["grep", "-F", "\t[", "/proc/kallsyms"])
        XCTAssertEqual(lines.status, 0, lines.stderr)
        for line in lines.stdout.split(separator: "\n") {
            let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard f.count == 4, f[3].hasPrefix("["), let a = UInt64(f[0], radix: 16) else { continue }
            symbols[String(f[3].dropFirst().dropLast()), default: []].append(a)
        }
        var checked = 0
        for m in modules where m.state == "Live" {
            let this = try ev.symbols.find(.name(module: m.name, name: "__this_module", ordinal: nil, address: nil))
            guard this.count == 1 else { XCTFail("\(m.name): kallsyms has \(this.count) __this_module"); continue }
            let regions = try map.regions(module: this[0].address, memory: ev.memory)
            func held(_ a: UInt64) -> Bool { regions.contains { $0.contains(a) } }
            let shown = regions.map { String($0.lowerBound, radix: 16) + "..<" + String($0.upperBound, radix: 16) }
            for section in [".text", ".data", ".bss", ".rodata", ".gnu.linkonce.this_module"] {
                guard let text = try? FileBytes.readText("/sys/module/\(m.name)/sections/\(section)"),
                      let a = UInt64(text.trimmingCharacters(in: .whitespacesAndNewlines).dropFirst(2), radix: 16) else { continue }
                XCTAssertTrue(held(a), "\(m.name)'s \(section) at \(String(a, radix: 16)) is in none of \(shown)")
                checked += 1
            }
            let outside = (symbols[m.name] ?? []).filter { !held($0) }
            XCTAssertTrue(outside.isEmpty, "\(m.name): \(outside.count) of its kallsyms symbols are in none of \(shown), e.g. \(outside.prefix(3).map { String($0, radix: 16) })")
        }
        XCTAssertGreaterThan(checked, 0, "no module had a section in /sys/module/*/sections")
    }
}

extension Evaluation {
    /// The object; formats it (forcing its reads) so memory errors surface.
    func object() throws -> Object {
        guard case .object(let o) = self else { throw FixtureError("not an object") }
        _ = try o.load(BPFMemoryHolder.memory ?? (try BPFMemory()))
        return o
    }

}

enum BPFMemoryHolder { nonisolated(unsafe) static var memory: BPFMemory? }
