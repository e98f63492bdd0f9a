import BTF
import KernelSource
import KernelSymbols
import KreachSupport

/// The kernel's own lists about tracing, read once: ftrace-able functions and the kprobe blacklist.
public struct TracingLists {
    /// Names (clone suffixes kept) in available_filter_functions; nil when it couldn't be read.
    public let filterFunctions: NameSet?
    public let filterFunctionsProblem: String?
    /// Names in the kprobe blacklist; nil when it couldn't be read.
    public let blacklist: NameSet?
    public let blacklistProblem: String?

    public init(kernel: Kernel) {
        func names(_ file: KernelFile, field: (UnsafePointer<UInt8>, Int) -> (Int, Int)?) -> (NameSet?, String?) {
            do {
                let set = NameSet(buffer: try kernel.buffer(file), field: field)
                // Never empty on a kernel that has the file: an empty one is truncated, and trusting it would
                // call every function notrace (or nothing blacklisted).
                guard set.count > 0 else { return (nil, "\(kernel.path(file)) lists no function (empty or truncated)") }
                return (set, nil)
            } catch {
                return (nil, "\(error)")
            }
        }
        // "name" or "name [module]": up to the first space.
        (filterFunctions, filterFunctionsProblem) = names(.availableFilterFunctions) { p, n in
            var e = 0
            while e < n && p[e] != 32 { e += 1 }
            return (0, e)
        }
        // "0xstart-0xend\tname": after the last tab.
        (blacklist, blacklistProblem) = names(.kprobesBlacklist) { p, n in
            var t = n - 1
            while t >= 0 && p[t] != 9 { t -= 1 }
            return t < 0 ? nil : (t + 1, n - t - 1)
        }
    }
}

/// `kreach why`'s verdict on a function: whether and how it can be probed. The raw value is the word
/// `why` prints and `why --json`/`where --json` emit.
public enum ProbeVerdict: String, Sendable, CaseIterable {
    /// In available_filter_functions: kprobe, and fentry when BTF has the FUNC.
    case traceable
    /// Text, but not ftrace-able (notrace), or available_filter_functions unreadable so ftrace-ability is unknown.
    case kprobeOnly = "kprobe-only"
    /// In the kprobe blacklist.
    case blacklisted
    /// Only compiler clones (.isra/.constprop/.part) are in kallsyms.
    case cloneOnly = "clone-only"
    /// A .cold fragment: not an entry point.
    case coldFragment = "cold-fragment"
    /// A BTF FUNC without a symbol.
    case inlined
    /// In neither kallsyms nor BTF.
    case absent
    /// A data symbol.
    case notAFunction = "not-a-function"
    /// No kprobes and available_filter_functions unreadable: fentry may attach (BTF has the FUNC).
    case fentryUnconfirmed = "fentry-unconfirmed"
    /// kallsyms unreadable.
    case unknown

    /// Some probe may attach.
    public var probeable: Bool { [.traceable, .kprobeOnly, .cloneOnly, .fentryUnconfirmed].contains(self) }
}

/// Whether and how a function can be probed, and why not.
public struct Verdict {
    public let verdict: ProbeVerdict
    /// Human-readable lines: what was found, what follows, which probes to use.
    public let lines: [String]
    /// Probe specs that should attach (bpftrace syntax), best first.
    public let probes: [String]

    /// The verdict's word (traceable, kprobe-only, …), as `why` prints it.
    public var word: String { verdict.rawValue }
}

/// Decides probe-ability from kallsyms (is it text?), available_filter_functions (ftrace-able, so not
/// notrace), the kprobe blacklist, clone names (.isra/.constprop/.part/.cold) and BTF FUNC records.
public struct WhyAnalyzer {
    let kernel: Kernel
    let lists: TracingLists
    let kprobes: Bool
    /// "fentry", or "kfunc" for bpftrace before 0.19: suggestions use the installed bpftrace's names.
    let fentry: String

    public init(kernel: Kernel, lists: TracingLists? = nil, fentryName: String = "fentry") {
        self.kernel = kernel
        self.lists = lists ?? TracingLists(kernel: kernel)
        self.fentry = fentryName
        switch kernel.source {
        case .live: kprobes = FileBytes.exists("/sys/bus/event_source/devices/kprobe") || FileBytes.exists(kernel.path(.events) + "/../kprobe_events")
        case .snapshot: kprobes = FileBytes.exists(kernel.path(.kprobesBlacklist))
        }
    }

    /// A BTF FUNC named `name` in vmlinux or any module.
    func btfFunction(_ name: String) throws -> (BTF, TypeID)? {
        for btf in try kernel.types().allObjects() {
            if let id = try btf.lookup(name).first(where: { try btf.kind(of: $0) == .function && btf.owner(of: $0) === btf }) {
                return (btf, id)
            }
        }
        return nil
    }

    /// The verdict for one symbol name as it is in kallsyms (clone suffix included).
    func symbolVerdict(_ s: KernelSymbol) -> (ProbeVerdict, String) {
        let name = s.name
        if s.isColdFragment { return (.coldFragment, "\(name): a .cold fragment (the unlikely half of a function), not an entry point") }
        if let bl = lists.blacklist, bl.contains(name) { return (.blacklisted, "\(name): in the kprobe blacklist: kprobes refuse it") }
        if let aff = lists.filterFunctions {
            if aff.contains(name) { return (.traceable, "\(name): in available_filter_functions: ftrace-able (kprobe, and fentry when BTF has it)") }
            return (.kprobeOnly, "\(name): text, but not in available_filter_functions (notrace, or not ftrace-able): a raw kprobe may attach (perf probe, kprobe_events); bpftrace refuses it, and fentry can't")
        }
        return (.kprobeOnly, "\(name): text; available_filter_functions unreadable, so whether it is ftrace-able is unknown")
    }

    /// The bpftrace probes to suggest for the kallsyms function `name` with this verdict, best first: the one
    /// rule `why` and every `where` suggestion use. `btfFunction`: BTF has a FUNC of exactly this name (fentry
    /// needs one; a clone has none). bpftrace itself refuses what isn't in available_filter_functions, so a
    /// kprobe is suggested for kprobe-only only while that list is unreadable (ftrace-ability unknown).
    public func probes(for verdict: ProbeVerdict, function name: String, btfFunction: Bool) -> [String] {
        let unconfirmed = lists.filterFunctions == nil
        switch verdict {
        case .traceable, .fentryUnconfirmed:
            break
        case .kprobeOnly where unconfirmed:
            break
        default:
            return []
        }
        var probes: [String] = []
        if btfFunction { probes.append("\(fentry):\(name)") }
        if kprobes && verdict != .fentryUnconfirmed { probes.append("kprobe:\(name)") }
        return probes
    }

    /// The verdict for a function that has a BTF FUNC record, from the lists alone when they can be read:
    /// pahole writes a FUNC only for a function with a symbol of that exact name, so kallsyms (the slow
    /// read) isn't needed to know it is text.
    public func verdictForBTFFunction(_ name: String) -> ProbeVerdict {
        if let bl = lists.blacklist, bl.contains(name) { return .blacklisted }
        guard let aff = lists.filterFunctions else {
            // Unknown whether it is ftrace-able: the same words `why` uses for that case.
            return kprobes ? .kprobeOnly : .fentryUnconfirmed
        }
        return aff.contains(name) ? .traceable : .kprobeOnly
    }

    /// The verdict alone, from kallsyms and the lists (no BTF search): for long `where` listings.
    public func quickVerdict(_ name: String) -> ProbeVerdict {
        guard let table = try? kernel.symbols() else { return .unknown }
        let k = table.kallsyms
        if let exact = k.indexes(named: name).first(where: { k.symbol($0).isText }) { return symbolVerdict(k.symbol(exact)).0 }
        let clones = k.indexes(baseOf: name).map(k.symbol).filter { $0.isText && !$0.isColdFragment }
        return clones.isEmpty ? .inlined : .cloneOnly
    }

    public func why(_ function: String) throws -> Verdict {
        let table = try kernel.symbols()
        let all = table.find(.name(module: nil, name: function, ordinal: nil, address: nil))
        let text = all.filter(\.isText)
        let exact = text.filter { $0.name == function }
        let clones = text.filter { $0.name != function }
        let base = Kallsyms.baseName(of: function)
        let btf = try btfFunction(base)
        // fentry needs a FUNC of the exact name: a clone asked for by name has only its source's.
        let exactBTF = base == function ? btf != nil : try btfFunction(function) != nil
        var lines: [String] = []
        var probes: [String] = []
        if !all.isEmpty && text.isEmpty {
            let s = all[0]
            return Verdict(verdict: .notAFunction, lines: ["\(function) is a \(s.section) symbol (\(s.typeLetter)), not a function: read it with `kreach show`"], probes: [])
        }
        if let problem = lists.filterFunctionsProblem {
            lines.append("note: available_filter_functions unreadable (\(problem)): ftrace-ability is unknown, so 'traceable' can't be confirmed")
        }
        if let problem = lists.blacklistProblem, kprobes {
            lines.append("note: kprobe blacklist unreadable (\(problem)): a blacklisted function would look probe-able")
        }
        if !kprobes { lines.append("note: this kernel has no kprobes (no kprobe PMU or kprobe_events): only fentry/fexit and tracepoints") }
        /// A clone's line and its probes (clones have no BTF FUNC of their own).
        func addClone(_ s: KernelSymbol) {
            let (verdict, line) = symbolVerdict(s)
            lines.append(line + (s.module.map { " [\($0)]" } ?? ""))
            probes += self.probes(for: verdict, function: s.name, btfFunction: false).filter { !probes.contains($0) }
        }
        if !exact.isEmpty {
            for s in exact { lines.append(symbolVerdict(s).1 + (s.module.map { " [\($0)]" } ?? "")) }
            var verdict = symbolVerdict(exact[0]).0
            if exactBTF && verdict == .kprobeOnly && lists.filterFunctions == nil && !kprobes {
                // Can't tell whether it is ftrace-able; fentry is the only kind left to try without kprobes.
                verdict = .fentryUnconfirmed
                lines.append("\(fentry):\(function) may attach (BTF has the FUNC), unconfirmed without available_filter_functions")
            }
            probes = self.probes(for: verdict, function: function, btfFunction: exactBTF)
            if !clones.isEmpty { lines.append("also clones: " + clones.map(\.name).joined(separator: ", ")) }
            clones.forEach(addClone)
            return Verdict(verdict: verdict, lines: lines, probes: probes)
        }
        if !clones.isEmpty {
            lines.insert("\(function) exists only as compiler clones (the original was inlined or specialized):", at: 0)
            clones.forEach(addClone)
            lines.append("a clone's signature may differ from the source (arguments removed or reordered by .isra/.constprop)")
            let verdicts = clones.filter { !$0.isColdFragment }.map { symbolVerdict($0).0 }
            let verdict: ProbeVerdict = verdicts.contains(.traceable) || verdicts.contains(.kprobeOnly) ? .cloneOnly : (verdicts.first ?? .coldFragment)
            return Verdict(verdict: verdict, lines: lines, probes: probes)
        }
        if let (b, id) = btf {
            lines.insert("\(function) has a BTF FUNC in \(b.objectName) (\(b.describe(id))) but no symbol in kallsyms: inlined into every caller", at: 0)
            return Verdict(verdict: .inlined, lines: lines, probes: [])
        }
        lines.insert("\(function) is in neither kallsyms nor BTF: inlined into every caller, or a macro (both are possible); probe a caller instead", at: 0)
        return Verdict(verdict: .absent, lines: lines, probes: [])
    }
}
