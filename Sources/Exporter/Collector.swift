import Glibc
import KernelObject
import KernelSource
import KernelSymbols
import Memory

/// Reads the configured metrics, one scrape at a time, through one memory reader (the BPF program is
/// loaded once). Names and types are resolved through one `Evaluator`, built again when the module list
/// changes (a "resolution refresh"). Module identity (name and core address in /proc/modules) is read
/// before and after each scrape's reads: a metric whose module is absent has no series, and values of a
/// module that changed during the reads are dropped, never reported. Not thread-safe: one scrape at a time.
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
    func moduleIdentities(_ kernel: Kernel) throws -> [String: UInt64] {
        var ids: [String: UInt64] = [:]
        for m in try kernel.modules() where m.state == "Live" { ids[m.name] = m.address }
        return ids
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
        let before = try moduleIdentities(kernel)
        if evaluator == nil || resolvedModules != before {
            if evaluator != nil {
                refreshes += 1
                kernel = try openKernel()  // fresh kallsyms, module objects and BTF
            }
            self.kernel = kernel
            let ev = try Evaluator(kernel: kernel, memory: memory)
            evaluator = ev
            formatter = ObjectFormatter(evaluator: ev)
            resolvedModules = before
            compiled = [:]
        }
        guard let ev = evaluator, let fmt = formatter else { return [] }
        var families: [Family] = []
        for metric in config.metrics {
            var family = Family(name: metric.name, help: metric.help, type: metric.type, samples: [])
            // Absent module: no series, and not an error.
            guard metric.modules.allSatisfy({ before[$0] != nil }) else { families.append(family); continue }
            do {
                family.samples = try read(metric, ev, fmt)
            } catch {
                readErrors[metric.name, default: 0] += 1
                lastErrors[metric.name] = (error as? ExpressionError)?.message ?? "\(error)"
            }
            ev.clearWarnings()
            families.append(family)
        }
        let after = try moduleIdentities(kernel)
        if after != before {
            resolvedModules = nil  // resolve again next scrape
            for (i, metric) in config.metrics.enumerated() where metric.modules.contains(where: { before[$0] != after[$0] }) {
                if !families[i].samples.isEmpty { discardedDuringChange += 1 }
                families[i].samples = []
            }
        }
        return families
    }

    func read(_ metric: MetricConfig, _ ev: Evaluator, _ fmt: ObjectFormatter) throws -> [Sample] {
        switch metric.source {
        case .expression(let text):
            if compiled[metric.name] == nil { compiled[metric.name] = .some(try? ev.compile(text)) }
            if let c = compiled[metric.name] ?? nil {
                return [Sample(labels: metric.constantLabels, value: try ev.number(c).text)]
            }
            guard case .object(let o) = try ev.evaluate(text) else {
                throw ExpressionError.plain("`\(text)` is a container walk: use `walk:` with `value:` and `label_fields:`")
            }
            return [Sample(labels: metric.constantLabels, value: try o.number(memory).text)]
        case let .walk(text, valueField, labelFields):
            guard case .entries(let entries, _) = try ev.evaluate(text) else {
                throw ExpressionError.plain("`\(text)` is not a container walk: use `expr:`")
            }
            var samples: [Sample] = []
            for entry in entries {
                var labels = metric.constantLabels
                for (label, field) in labelFields {
                    labels.append((label, Self.labelText(try fmt.compact(try ev.evaluate(field: field, of: entry)))))
                }
                samples.append(Sample(labels: labels, value: try ev.evaluate(field: valueField, of: entry).number(memory).text))
            }
            return samples
        }
    }

    /// A formatted value as a label value: a C string without its quotes.
    static func labelText(_ compact: String) -> String {
        if compact.count >= 2, compact.hasPrefix("\""), compact.hasSuffix("\"") { return String(compact.dropFirst().dropLast()) }
        return compact
    }
}
