import ArgumentParser
import KernelSource
import KreachSupport
import Probing
import ScriptGen

struct Why: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "why",
        abstract: "Explain whether a function can be probed (kprobe, fentry) and why not, from the kernel's own lists.",
        discussion: """
            Verdicts: traceable (in available_filter_functions: kprobe and fentry), kprobe-only (text but not
            ftrace-able: notrace; bpftrace refuses it, a raw kprobe via perf probe may work), blacklisted (kprobe blacklist), clone-only (only .isra/.constprop/.part clones),
            cold-fragment, inlined (BTF FUNC without a symbol), absent (inlined everywhere or a macro),
            not-a-function. Suggested probes are bpftrace's. Exit status 0 when some suggested probe can attach, 1 otherwise.
            """)

    @OptionGroup var options: KernelOptions

    @Argument(help: "Functions.")
    var functions: [String]

    func validate() throws {
        if functions.isEmpty { throw ValidationError("give at least one FUNC") }
    }

    func run() throws {
        let kernel = try options.openKernel()
        // Probe names as the installed bpftrace spells them (kfunc/kretfunc before 0.19).
        let kfunc = (try? Bpftrace.find())?.usesKfuncNames ?? false
        let analyzer = WhyAnalyzer(kernel: kernel, fentryName: kfunc ? "kfunc" : "fentry")
        var results: [JSON] = []
        var anyUnprobeable = false
        for f in functions {
            let v = try analyzer.why(f)
            if v.probes.isEmpty { anyUnprobeable = true }
            if options.json {
                results.append(.object([("function", .string(f)), ("verdict", .string(v.word)),
                                        ("reasons", .array(v.lines.map(JSON.string))), ("probes", .array(v.probes.map(JSON.string)))]))
            } else {
                print(Terminal.escaped("\(f): \(v.word)"))
                for l in v.lines { print(Terminal.escaped("  " + l)) }
                if !v.probes.isEmpty { print("  probe with: " + v.probes.joined(separator: "  ")) }
            }
        }
        if options.json { print(JSON.array(results).pretty) }
        if anyUnprobeable { throw Failure(message: "", code: 1) }
    }
}
