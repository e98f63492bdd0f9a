import Yams

/// A metric's Prometheus type. Counters are absolute kernel values (they may drop, e.g. on module reload).
public enum MetricType: String, Sendable, CaseIterable {
    case gauge, counter
}

/// One configured metric: a single expression, or a container walk giving one series per entry.
public struct MetricConfig: Sendable, Equatable {
    /// The name as served: `kreach_` + the configured name.
    public let name: String
    public let help: String
    public let type: MetricType
    public let source: Source
    /// Constant labels on every series of the metric.
    public let constantLabels: [(String, String)]
    /// Modules the expression names (`mod:name`, ``mod`name``): the series exist only while they are loaded.
    public let modules: [String]
    /// The config line the metric starts on.
    public let line: Int

    public enum Source: Sendable, Equatable {
        /// `expr:` any `show` expression giving a scalar.
        case expression(String)
        /// `walk:` a container helper; `value:` a field of each entry; `label_fields:` label = field.
        case walk(String, value: String, labelFields: [(String, String)])

        public static func == (a: Source, b: Source) -> Bool {
            switch (a, b) {
            case let (.expression(x), .expression(y)): return x == y
            case let (.walk(w1, v1, l1), .walk(w2, v2, l2)):
                return w1 == w2 && v1 == v2 && l1.map { $0.0 + "=" + $0.1 } == l2.map { $0.0 + "=" + $0.1 }
            default: return false
            }
        }
    }

    public static func == (a: MetricConfig, b: MetricConfig) -> Bool {
        a.name == b.name && a.help == b.help && a.type == b.type && a.source == b.source
            && a.constantLabels.map { $0.0 + "=" + $0.1 } == b.constantLabels.map { $0.0 + "=" + $0.1 }
    }
}

/// A config error at a line of the file.
public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public let file: String
    public let line: Int?
    public let message: String
    public var description: String { "\(file)\(line.map { ":\($0)" } ?? ""): \(message)" }
}

/// The exporter's YAML config:
///
///     metrics:
///       - name: loop_max_loop            # served as kreach_loop_max_loop
///         help: loop devices the loop module was loaded for
///         type: gauge                    # or counter
///         expr: loop:max_loop            # any `show` expression with a scalar value
///         labels: {device: loop}         # optional constant labels
///       - name: task_prio
///         help: priority of the tasks on the run list
///         type: gauge
///         walk: list_for_each_entry(struct task_struct, &init_task.tasks, tasks)
///         label_fields: {comm: comm, pid: pid}
///         value: prio
public struct ExporterConfig: Sendable {
    public static let prefix = "kreach_"
    /// Names the exporter's own metrics use (`kreach_exporter_*`).
    public static let reservedPrefix = "exporter_"
    public static let maxMetrics = 10_000

    public let metrics: [MetricConfig]

    /// Parses and validates the whole config; the first error names its line.
    public init(yaml: String, file: String) throws(ConfigError) {
        func fail(_ line: Int?, _ message: String) -> ConfigError { ConfigError(file: file, line: line, message: message) }
        let root: Node?
        do { root = try Yams.compose(yaml: yaml) } catch let e as YamlError {
            throw fail(Self.line(of: e), "not valid YAML: \(Self.summary(of: e))")
        } catch { throw fail(nil, "not valid YAML: \(error)") }
        guard let root, case .mapping(let top) = root else { throw fail(root?.mark?.line ?? 1, "the config must be a mapping with a `metrics:` list") }
        for (key, _) in top where key.string != "metrics" {
            throw fail(key.mark?.line, "unknown key `\(key.string ?? "?")` (expected `metrics`)")
        }
        guard let list = top["metrics"] else { throw fail(root.mark?.line, "missing `metrics:`") }
        guard case .sequence(let items) = list else { throw fail(list.mark?.line, "`metrics` must be a list") }
        guard items.count <= Self.maxMetrics else { throw fail(list.mark?.line, "more than \(Self.maxMetrics) metrics") }
        var metrics: [MetricConfig] = []
        var seen: [String: Int] = [:]
        for item in items {
            let m = try Self.metric(item, fail)
            if let first = seen[m.name] { throw fail(m.line, "metric `\(m.name)` is already defined at line \(first)") }
            seen[m.name] = m.line
            metrics.append(m)
        }
        self.metrics = metrics
    }

    static let metricKeys: Set<String> = ["name", "help", "type", "expr", "labels", "walk", "value", "label_fields"]

    static func metric(_ node: Node, _ fail: (Int?, String) -> ConfigError) throws(ConfigError) -> MetricConfig {
        let line = node.mark?.line ?? 0
        guard case .mapping(let map) = node else { throw fail(line, "each metric must be a mapping (name, help, type, expr)") }
        for (key, _) in map where !metricKeys.contains(key.string ?? "") {
            throw fail(key.mark?.line, "unknown key `\(key.string ?? "?")` (expected one of \(metricKeys.sorted().joined(separator: ", ")))")
        }
        func string(_ key: String, required: Bool = true) throws(ConfigError) -> (String, Int)? {
            guard let v = map[key] else {
                if required { throw fail(line, "metric is missing `\(key):`") }
                return nil
            }
            guard case .scalar(let s) = v, !s.string.isEmpty else { throw fail(v.mark?.line, "`\(key)` must be a non-empty string") }
            return (s.string, v.mark?.line ?? line)
        }
        func labels(_ key: String) throws(ConfigError) -> [(String, String)] {
            guard let v = map[key] else { return [] }
            guard case .mapping(let m) = v else { throw fail(v.mark?.line, "`\(key)` must be a mapping of label: value") }
            var out: [(String, String)] = []
            for (k, value) in m {
                let l = k.mark?.line
                guard let name = k.string, isLabelName(name) else { throw fail(l, "bad label name `\(k.string ?? "?")` (letters, digits, _; not starting with a digit or __)") }
                guard case .scalar(let s) = value, !s.string.isEmpty else { throw fail(value.mark?.line, "label `\(name)` needs a non-empty string value") }
                if out.contains(where: { $0.0 == name }) { throw fail(l, "label `\(name)` is given twice") }
                out.append((name, s.string))
            }
            return out
        }
        guard let (name, nameLine) = try string("name") else { throw fail(line, "metric is missing `name:`") }
        guard isMetricName(name) else { throw fail(nameLine, "bad metric name `\(name)` (letters, digits, _ and :, not starting with a digit)") }
        if name.hasPrefix(reservedPrefix) { throw fail(nameLine, "names starting with `\(reservedPrefix)` are the exporter's own (kreach_exporter_*)") }
        guard let (help, _) = try string("help") else { throw fail(line, "metric is missing `help:`") }
        guard let (typeText, typeLine) = try string("type") else { throw fail(line, "metric is missing `type:`") }
        guard let type = MetricType(rawValue: typeText) else { throw fail(typeLine, "`type` must be gauge or counter, not `\(typeText)`") }
        let constant = try labels("labels")
        let expr = try string("expr", required: false)
        let walk = try string("walk", required: false)
        let source: MetricConfig.Source
        let text: String
        switch (expr, walk) {
        case let (.some((e, _)), nil):
            if map["value"] != nil || map["label_fields"] != nil { throw fail(line, "`value` and `label_fields` go with `walk`, not `expr`") }
            source = .expression(e); text = e
        case let (nil, .some((w, _))):
            guard let (value, _) = try string("value", required: false) else { throw fail(line, "a `walk` metric needs `value:` (a field of each entry)") }
            let fields = try labels("label_fields")
            guard !fields.isEmpty else { throw fail(line, "a `walk` metric needs `label_fields:` (label: field) to tell its series apart") }
            for (l, _) in fields where constant.contains(where: { $0.0 == l }) { throw fail(line, "label `\(l)` is both constant and a field") }
            source = .walk(w, value: value, labelFields: fields); text = w + " " + value
        case (.some, .some): throw fail(line, "give `expr` or `walk`, not both")
        case (nil, nil): throw fail(line, "metric needs `expr:` (or `walk:` with `value:`)")
        }
        return MetricConfig(name: prefix + name, help: help, type: type, source: source, constantLabels: constant,
                            modules: moduleNames(in: text), line: line)
    }

    /// `[a-zA-Z_:][a-zA-Z0-9_:]*`
    static func isMetricName(_ s: String) -> Bool {
        guard let first = s.utf8.first, !(48...57).contains(first) else { return false }
        return s.utf8.allSatisfy { isWordByte($0) || $0 == UInt8(ascii: ":") }
    }

    /// `[a-zA-Z_][a-zA-Z0-9_]*`, not `__` (reserved by Prometheus).
    static func isLabelName(_ s: String) -> Bool {
        guard let first = s.utf8.first, !(48...57).contains(first), !s.hasPrefix("__") else { return false }
        return s.utf8.allSatisfy(isWordByte)
    }

    static func isWordByte(_ b: UInt8) -> Bool {
        (48...57).contains(b) || (65...90).contains(b) || (97...122).contains(b) || b == UInt8(ascii: "_")
    }

    /// Module names an expression qualifies globals with: `mod:name` and ``mod`name``.
    static func moduleNames(in text: String) -> [String] {
        let b = Array(text.utf8)
        var out: [String] = []
        var i = 0
        while i < b.count {
            guard isWordByte(b[i]) else { i += 1; continue }
            let start = i
            while i < b.count, isWordByte(b[i]) { i += 1 }
            let precededBySeparator = start > 0 && (b[start - 1] == UInt8(ascii: ":") || b[start - 1] == UInt8(ascii: "`"))
            if !precededBySeparator, i + 1 < b.count, b[i] == UInt8(ascii: ":") || b[i] == UInt8(ascii: "`"),
               isWordByte(b[i + 1]), !(48...57).contains(b[start]) {
                let name = String(decoding: b[start..<i], as: UTF8.self)
                if name != "vmlinux", !out.contains(name) { out.append(name) }
            }
        }
        return out
    }

    static func line(of e: YamlError) -> Int? {
        switch e {
        case let .scanner(_, _, mark, _), let .parser(_, _, mark, _), let .composer(_, _, mark, _): return mark.line
        default: return nil
        }
    }

    static func summary(of e: YamlError) -> String {
        switch e {
        case let .scanner(_, problem, _, _), let .parser(_, problem, _, _), let .composer(_, problem, _, _): return problem
        default: return "\(e)"
        }
    }
}
