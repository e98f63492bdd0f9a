/// One sample line: labels (in order) and the value.
public struct Sample: Sendable, Equatable {
    public var labels: [(String, String)]
    public var value: String

    public init(labels: [(String, String)], value: String) {
        self.labels = labels
        self.value = value
    }

    public static func == (a: Sample, b: Sample) -> Bool {
        a.value == b.value && a.labels.map { $0.0 + "\u{0}" + $0.1 } == b.labels.map { $0.0 + "\u{0}" + $0.1 }
    }
}

/// A metric family with its samples.
public struct Family: Sendable, Equatable {
    public let name: String
    public let help: String
    public let type: MetricType
    public var samples: [Sample]

    public init(name: String, help: String, type: MetricType, samples: [Sample]) {
        self.name = name
        self.help = help
        self.type = type
        self.samples = samples
    }
}

/// The Prometheus text exposition format, version 0.0.4 (also node_exporter's textfile format).
public enum TextFormat {
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    /// `# HELP`, `# TYPE` and the sample lines of each family; families without samples are left out.
    public static func render(_ families: [Family]) -> String {
        var out = ""
        for f in families where !f.samples.isEmpty {
            out += "# HELP \(f.name) \(escape(f.help, quotes: false))\n"
            out += "# TYPE \(f.name) \(f.type.rawValue)\n"
            for s in f.samples {
                out += f.name
                if !s.labels.isEmpty {
                    out += "{" + s.labels.map { "\($0.0)=\"\(escape($0.1, quotes: true))\"" }.joined(separator: ",") + "}"
                }
                out += " " + s.value + "\n"
            }
        }
        return out
    }

    /// Backslash and newline escaped (and `"` inside label values), as the format says.
    static func escape(_ s: String, quotes: Bool) -> String {
        var out = ""
        for c in s.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\"" where quotes: out += "\\\""
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// A float in the format's syntax (`+Inf`, `NaN`, shortest round-trip digits).
    public static func float(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        return "\(v)"
    }
}
