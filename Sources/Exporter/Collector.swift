import Glibc
import KernelObject
import KernelSource
import KernelSymbols
import Memory

/// Reads the configured metrics, one scrape at a time, through one memory reader (the BPF program is
/// loaded once). Names and types are resolved through one `Evaluator`, built again when the module list
/// changes (a "resolution refresh"). Module identity (name and core address in /proc/modules) is read
/// before and after each scrape's reads: a metric whose module is absent has no series, and values of a
/// module that changed during the reads are dropped, never reported. A metric depends on the modules its
/// expression names and on the modules whose core memory holds the values it read (a pointer chain from a
/// vmlinux global into a module's data): those values are dropped too when that module changes during the
/// reads, and a read that faults in memory of a module that went away makes the series absent, not an error.
/// Not thread-safe: one scrape at a time.
public final class Collector {
    public let config: ExporterConfig
    let memory: KernelMemory
    let openKernel: () throws -> Kernel
    var kernel: Kernel?
    /// Expressions resolved once per resolution (by metric name); failures fall back to evaluating per scrape.
    var compiled: [String: CompiledExpression?] = [:]
    var evaluator: Evaluator?
    var formatter: ObjectFormatter?
    /// The module identities the evaluator was built against.
    var resolvedModules: [String: UInt64]?
    /// Per metric, the modules whose memory held its values at its last successful read.
    var homes: [String: Set<String>] = [:]
    /// Reads where each module's memory lies (nil when vmlinux BTF lacks struct module), and what it read.
    var memoryMap: ModuleMemoryMap?
    var regionCache: [String: (address: UInt64, regions: [Range<UInt64>])] = [:]
    /// Exporter-wide counts (exposed as kreach_exporter_* counters).
    public private(set) var refreshes = 0
    public private(set) var discardedDuringChange = 0
    public private(set) var readErrors: [String: Int] = [:]
    /// The last error of each metric (for the log; not exposed as a label).
    public private(set) var lastErrors: [String: String] = [:]

    public init(config: ExporterConfig, memory: KernelMemory, openKernel: @escaping () throws -> Kernel = { try Kernel(source: .live) }) {
        self.config = config
        self.memory = memory
        self.openKernel = openKernel
    }

    /// Name → core address of each loaded module (/proc/modules).
    static func identities(_ modules: [LoadedModule]) -> [String: UInt64] {
        var ids: [String: UInt64] = [:]
        for m in modules { ids[m.name] = m.address }
        return ids
    }

    /// The modules in state Live (MODULE_STATE_LIVE), not being loaded or unloaded.
    static func live(_ modules: [LoadedModule]) -> [LoadedModule] {
        modules.filter { $0.state == "Live" }
    }

    /// Names of the modules whose core memory holds one of `addresses`.
    func modules(holding addresses: [UInt64], in modules: [LoadedModule]) -> Set<String> {
        var names: Set<String> = []
        for m in modules where regions(of: m).contains(where: { r in addresses.contains(where: { r.contains($0) }) }) {
            names.insert(m.name)
        }
        return names
    }

    /// A module's core memory: the regions its `struct module` records (`ModuleMemoryMap`; cached per module
    /// identity, as module memory doesn't move while the module is loaded), else the range /proc/modules
    /// gives (the text's base and the core's total size: all of it before 6.4, where the core was one block).
    func regions(of module: LoadedModule) -> [Range<UInt64>] {
        if let known = regionCache[module.name], known.address == module.address { return known.regions }
        let fallback = module.range.map { [$0] } ?? []
        guard let map = memoryMap, let ev = evaluator,
              let this = try? ev.symbols.find(.name(module: module.name, name: "__this_module", ordinal: nil, address: nil)),
              this.count == 1, let read = try? map.regions(module: this[0].address, memory: memory), !read.isEmpty else { return fallback }
        regionCache[module.name] = (module.address, read)
        return read
    }

    /// One scrape: the configured families, then the exporter's own.
    public func collect() -> [Family] {
        var start = timespec()
        clock_gettime(CLOCK_MONOTONIC, &start)
        var families: [Family] = []
        var up = 1
        do {
            families = try collectConfigured()
        } catch {
            up = 0
            lastErrors["(exporter)"] = "\(error)"
        }
        var end = timespec()
        clock_gettime(CLOCK_MONOTONIC, &end)
        let seconds = Double(end.tv_sec - start.tv_sec) + Double(end.tv_nsec - start.tv_nsec) / 1e9
        families.append(Family(name: "kreach_exporter_up", help: "1 when the kernel and the module list could be read", type: .gauge,
                               samples: [Sample(labels: [], value: String(up))]))
        families.append(Family(name: "kreach_exporter_scrape_duration_seconds", help: "Time this scrape's reads took", type: .gauge,
                               samples: [Sample(labels: [], value: TextFormat.float(seconds))]))
        families.append(Family(name: "kreach_exporter_read_errors_total", help: "Reads of a metric that failed, since start", type: .counter,
                               samples: config.metrics.map { Sample(labels: [("metric", $0.name)], value: String(readErrors[$0.name] ?? 0)) }))
        families.append(Family(name: "kreach_exporter_resolution_refreshes_total", help: "Times names were resolved again after the module list changed", type: .counter,
                               samples: [Sample(labels: [], value: String(refreshes))]))
        families.append(Family(name: "kreach_exporter_discarded_reads_total", help: "Values dropped because their module changed during the reads", type: .counter,
                               samples: [Sample(labels: [], value: String(discardedDuringChange))]))
        return families
    }

    func collectConfigured() throws -> [Family] {
        var kernel = try kernel ?? openKernel()
        // Every module in /proc/modules, whatever its state: a module being loaded or unloaded still has its
        // memory, and a value read there depends on it.
        let all = try kernel.modules()
        let live = Self.live(all)
        let before = Self.identities(live)
        if evaluator == nil || resolvedModules != before {
            if evaluator != nil {
                refreshes += 1
                kernel = try openKernel()  // fresh kallsyms, module objects and BTF
            }
            self.kernel = kernel
            let ev = try Evaluator(kernel: kernel, memory: memory)
            evaluator = ev
            memoryMap = try? ModuleMemoryMap(vmlinux: ev.types.vmlinux)
            regionCache = [:]
            formatter = ObjectFormatter(evaluator: ev)
            resolvedModules = before
            compiled = [:]
        }
        guard let ev = evaluator, let fmt = formatter else { return [] }
        var families: [Family] = []
        /// Per metric (by index): the modules its values depend on, and its error if the read failed.
        var depends: [Set<String>] = []
        var failures: [Int: (message: String, fault: UInt64?, inModuleMemory: Bool)] = [:]
        for (i, metric) in config.metrics.enumerated() {
            var family = Family(name: metric.name, help: metric.help, type: metric.type, samples: [])
            var modules = Set(metric.modules)
            defer { depends.append(modules); families.append(family); ev.clearWarnings() }
            // Absent module: no series, and not an error.
            guard metric.modules.allSatisfy({ before[$0] != nil }) else { continue }
            do {
                let (samples, addresses) = try read(metric, ev, fmt)
                let holding = self.modules(holding: addresses, in: all)
                homes[metric.name] = holding
                modules.formUnion(holding)
                family.samples = samples
            } catch {
                let fault = (error as? MemoryFault)?.address
                // A fault inside a live module's memory depends on that module; one where a module the
                // values lived in last time went away is that module's absence, not a read error.
                if let fault { modules.formUnion(self.modules(holding: [fault], in: all)) }
                let gone = homes[metric.name, default: []].filter { before[$0] == nil }
                if !gone.isEmpty, fault.map({ self.modules(holding: [$0], in: live).isEmpty }) ?? true {
                    homes[metric.name] = nil
                    continue
                }
                // A failure with no address (a walk that met a NULL next or a loop) in a metric whose values lived
                // in module memory last time: it read a list that may be changing, so any module that is loading
                // or unloading during these reads makes it a change, not a read error (checked below).
                failures[i] = ((error as? ExpressionError)?.message ?? "\(error)", fault,
                               fault == nil && !(homes[metric.name] ?? []).isEmpty)
            }
        }
        let allAfter = try kernel.modules()
        let after = Self.identities(Self.live(allAfter))
        let changed = Set(before.keys).union(after.keys).filter { before[$0] != after[$0] }
        if !changed.isEmpty { resolvedModules = nil }  // resolve again next scrape
        // A module that is not Live (MODULE_STATE_COMING or GOING: loading or unloading) before or after the reads
        // is changing too: values read in its memory are dropped.
        let unsettled = changed.union(Set((all + allAfter).map(\.name)).subtracting(before.keys).subtracting(after.keys))
        for (i, metric) in config.metrics.enumerated() {
            if !depends[i].isDisjoint(with: unsettled) || (failures[i]?.inModuleMemory == true && !unsettled.isEmpty) {
                // Read while a module it depends on changed: dropped, neither a value nor an error.
                if !families[i].samples.isEmpty || failures[i] != nil { discardedDuringChange += 1 }
                families[i].samples = []
            } else if let failure = failures[i] {
                readErrors[metric.name, default: 0] += 1
                lastErrors[metric.name] = failure.message
            }
        }
        return families
    }

    /// The metric's samples, and the addresses of the objects their values were read from.
    func read(_ metric: MetricConfig, _ ev: Evaluator, _ fmt: ObjectFormatter) throws -> ([Sample], [UInt64]) {
        switch metric.source {
        case .expression(let text):
            if compiled[metric.name] == nil { compiled[metric.name] = .some(try? ev.compile(text)) }
            let object: Object
            if let c = compiled[metric.name] ?? nil {
                object = try ev.object(c)
            } else {
                guard case .object(let o) = try ev.evaluate(text) else {
                    throw ExpressionError.plain("`\(text)` is a container walk: use `walk:` with `value:` and `label_fields:`")
                }
                object = o
            }
            return ([Sample(labels: metric.constantLabels, value: try object.number(memory).text)], object.address.map { [$0] } ?? [])
        case let .walk(text, valueField, labelFields):
            guard case .entries(let entries, _) = try ev.evaluate(text) else {
                throw ExpressionError.plain("`\(text)` is not a container walk: use `expr:`")
            }
            var samples: [Sample] = []
            var addresses: [UInt64] = []
            for entry in entries {
                var labels = metric.constantLabels
                for (label, field) in labelFields {
                    labels.append((label, Self.labelText(try fmt.compact(try ev.evaluate(field: field, of: entry)))))
                }
                let value = try ev.evaluate(field: valueField, of: entry)
                addresses += [entry.address, value.address].compactMap { $0 }
                samples.append(Sample(labels: labels, value: try value.number(memory).text))
            }
            return (samples, addresses)
        }
    }

    /// A formatted value as a label value: a C string without its quotes.
    static func labelText(_ compact: String) -> String {
        if compact.count >= 2, compact.hasPrefix("\""), compact.hasSuffix("\"") { return String(compact.dropFirst().dropLast()) }
        return compact
    }
}
