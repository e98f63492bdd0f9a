import ArgumentParser
import KernelSource
import KreachSupport
import KernelObject
import Memory
import Probing
import ScriptGen

struct Where: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "where",
        abstract: "Find where the kernel exposes a type or a module global: functions, tracepoints, references.",
        discussion: """
            TARGET is a type (`struct nlm_file`, `lockd:struct nlm_host`, `struct sk_buff`, `pid_t`) or a module
            global (`brd:rd_size`). For a type: functions in vmlinux and every module taking it (by pointer or value,
            through typedefs, modifiers and arrays) or returning it, raw tracepoints (btf_trace_* prototypes) and
            tracepoints (format fields) carrying it. For a module global: the functions whose code references it
            (relocations of the module's .ko), one line per function with its first site and the number of
            sites (--sites lists each), getters among them. Without the module's BTF the references are still
            listed; getters and seq_file show functions are then marked only where vmlinux BTF has the prototype.
            Compiler clones (FUNC.isra.0) of a matching function are listed too: their signature may differ. Each function has its `kreach why` verdict.
            For a vmlinux global (`pid_max`): functions whose code references it, from a byte scan of kernel text
            read through kernel memory (RIP-relative and absolute 32-bit forms). Most direct first.
            seq_file show functions among the references are marked; for a module, one that is the .show of a static
            struct seq_operations (the .ko's relocations say so) is labelled "called once per item" (also in the
            --trigger table). A note says what to try when the global's address is stored or taken (so code may
            fill it through a pointer), with that evidence; none when every use reads or writes it in place.
            Each function's suggestion is `kreach why`'s first probe (a getter's: a capture line).
            """)

    @OptionGroup var options: KernelOptions

    @Option(help: "Show at most this many places (functions, tracepoints; 0: all).")
    var limit: Int = 0

    @Flag(help: "List every reference site (func+0xoff) of each function, not just the first and a count.")
    var sites = false

    @Option(help: ArgumentHelp("Confirm live: count calls of the most direct probe-able candidates while CMD runs (bpftrace -c).", valueName: "CMD"))
    var trigger: String?

    @Option(help: "With --trigger: how many candidates to probe.")
    var probes: Int = 150

    @Argument(help: "A type or MODULE:GLOBAL.")
    var target: String

    func run() throws {
        let kernel = try options.openKernel()
        let kfunc = (try? Bpftrace.find())?.usesKfuncNames ?? false
        let analyzer = WhereAnalyzer(kernel: kernel, why: WhyAnalyzer(kernel: kernel, fentryName: kfunc ? "kfunc" : "fentry"))
        var hits = try analyzer.hits(for: WhereQuery(target, kernel: kernel), memory: { try MemoryChoice.auto.open() })
        for n in analyzer.notes { StandardError.write("kreach: note: \(n)") }
        if hits.isEmpty { throw Failure(message: "nothing found that exposes \(target)", code: 1) }
        if let trigger { return try runTrigger(hits, trigger) }
        let total = hits.count
        if limit > 0 { hits = Array(hits.prefix(limit)) }
        if options.json {
            print(JSON.array(hits.map { h in
                .object([("kind", .string(h.kind.rawValue)), ("object", .string(h.object)), ("place", .string(h.place)),
                         ("detail", .string(h.detail)), ("depth", .uint(UInt64(h.depth))),
                         ("verdict", h.verdict.map { .string($0.rawValue) } ?? .null), ("suggestion", h.suggestion.map(JSON.string) ?? .null),
                         ("sites", .array(h.sites.map(JSON.string))), ("seq_operations", h.seqOperations.map(JSON.string) ?? .null)])
            }).pretty)
            return
        }
        var lastKind: WhereHit.Kind?
        for h in hits {
            if h.kind != lastKind {
                print("\(h.kind.rawValue):")
                lastKind = h.kind
            }
            var line = "  \(h.place)"
            if h.object != "vmlinux" { line += " [\(h.object)]" }
            line += "  \(h.detail)"
            if let v = h.verdict { line += "  (\(v.rawValue))" }
            if let s = h.suggestion { line += "  -> \(s)" }
            if h.sites.count > 1 && !sites { line += "  [\(h.sites.count) sites]" }
            print(Terminal.escaped(line))
            if sites && h.sites.count > 1 { for site in h.sites { print(Terminal.escaped("      \(site)")) } }
        }
        if hits.count < total { print("(\(total - hits.count) more; --limit 0 for all)") }
    }
}

extension Where {
    /// Counts calls of the candidates while the command runs, most called first.
    func runTrigger(_ hits: [WhereHit], _ command: String) throws {
        let bpftrace = try Bpftrace.find()
        let specs = WhereAnalyzer.triggerProbes(hits, limit: probes)
        guard !specs.isEmpty else { throw Failure(message: "no probe-able candidate to confirm", code: 1) }
        let counter = TriggerCounter(bpftrace: bpftrace)
        let counts = try counter.count(probes: specs, command: command)
        // The baseline: what running any command costs (the shell, exec, exit), counted the same way; only
        // for the probes the trigger's tree called (attaching the others again would double the time).
        let called = counts.filter { $0.tree > 0 }.map(\.probe)
        let baseline = Dictionary(try counter.count(probes: called, command: "true").map { ($0.probe, $0.tree) }, uniquingKeysWith: { a, _ in a })
        let rows = counts.sorted { ($0.tree, $0.all) > ($1.tree, $1.all) }
        // Functions that are the .show of a static seq_operations: called once per item when its file is read.
        let perItem = Dictionary(hits.compactMap { h in h.seqOperations.map { ("kprobe:" + h.function, $0) } }, uniquingKeysWith: { a, _ in a })
        if options.json {
            print(JSON.array(rows.map {
                .object([("probe", .string($0.probe)), ("calls", .uint(UInt64($0.tree))), ("baseline", .uint(UInt64(baseline[$0.probe] ?? 0))),
                         ("system_wide", .uint(UInt64($0.all))), ("seq_operations", perItem[$0.probe].map(JSON.string) ?? .null)])
            }).pretty)
            return
        }
        print(Terminal.escaped("calls made by `\(command)` and the processes it started (\(specs.count) candidates probed);"))
        print("baseline: the same count for `true`; system-wide: every process during the run")
        print("  calls\tbaseline\tsystem-wide\tprobe")
        for c in rows where c.tree > 0 || c.all > 0 {
            let label = perItem[c.probe].map { "\t(.show of seq_operations \($0): once per item)" } ?? ""
            print(Terminal.escaped("  \(c.tree)\t\(baseline[c.probe] ?? 0)\t\(c.all)\t\(c.probe)" + label))
        }
        let silent = counts.filter { $0.tree == 0 && $0.all == 0 }.count
        if silent > 0 { print("  (\(silent) not called)") }
    }
}
