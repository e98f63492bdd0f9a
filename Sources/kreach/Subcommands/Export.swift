import ArgumentParser
import Dispatch
import Exporter
import Glibc
import KreachSupport
import Memory

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the expressions of a config file as Prometheus metrics (or write a textfile once).",
        discussion: """
            Metrics are served as kreach_<name>; the exporter's own are kreach_exporter_*. Only the config's \
            expressions are evaluated. Default address 127.0.0.1:\(Export.defaultPort). SIGTERM or SIGINT \
            stops serving (the scrape being answered finishes) and exits 0; SIGHUP reads the config again \
            (a bad one is reported on one line and the old one kept).
            """)

    static let defaultPort = 19157
    static let configLimit = FileLimit("exporter config", bytes: 4 << 20)

    @Option(help: ArgumentHelp("The YAML config (metrics: name, help, type, expr | walk + value + label_fields).", valueName: "FILE"))
    var config: String

    @Option(name: .customLong("web.listen-address"), help: ArgumentHelp("Address to listen on.", valueName: "HOST:PORT"))
    var listenAddress: String = "127.0.0.1:\(Export.defaultPort)"

    @Flag(name: .customLong("check-config"), help: "Validate the config and exit.")
    var checkConfig = false

    @Option(help: ArgumentHelp("Write the metrics once to this file in node_exporter's textfile format (atomically) and exit.", valueName: "PATH"))
    var textfile: String?

    @Option(help: ArgumentHelp("Memory reader: bpf, kcore or auto.", valueName: "READER"))
    var memory: String = "auto"

    func validate() throws {
        guard MemoryChoice(rawValue: memory) != nil else { throw ValidationError("--memory takes bpf, kcore or auto") }
        guard Export.hostPort(listenAddress) != nil else { throw ValidationError("--web.listen-address takes HOST:PORT, e.g. 127.0.0.1:\(Export.defaultPort)") }
    }

    /// `host:port`, `[v6]:port`.
    static func hostPort(_ text: String) -> (String, Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return host.isEmpty ? nil : (host, port)
    }

    /// The config file, parsed and validated.
    func load() throws -> ExporterConfig {
        let text = String(decoding: try FileBytes.read(config, limit: Export.configLimit), as: UTF8.self)
        return try ExporterConfig(yaml: text, file: config)
    }

    func run() throws {
        let parsed: ExporterConfig
        do { parsed = try load() } catch let error as ConfigError {
            throw Failure(message: Terminal.escaped(error.description), code: 1)
        }
        if checkConfig {
            print("\(config): \(parsed.metrics.count) metrics OK")
            return
        }
        let reader = try (MemoryChoice(rawValue: memory) ?? .auto).open()
        let collector = Collector(config: parsed, memory: reader)
        if let textfile {
            let families = collector.collect()
            try TextFile.write(TextFormat.render(families), to: textfile)
            for (metric, message) in collector.lastErrors.sorted(by: { $0.key < $1.key }) {
                StandardError.write("kreach: \(metric): \(Terminal.escaped(message))")
            }
            return
        }
        guard let (host, port) = Export.hostPort(listenAddress) else { return }
        let server = MetricsServer(collector: collector)
        var sources: [DispatchSourceSignal] = []
        defer { for s in sources { s.cancel() } }
        try server.run(host: host, port: port) { bound, stop in
            let queue = DispatchQueue(label: "kreach.export.signals")
            for number in [SIGTERM, SIGINT, SIGHUP] {
                signal(number, SIG_IGN)  // delivered to the dispatch source instead
                let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
                source.setEventHandler { [self] in
                    if number == SIGHUP {
                        reload(server, reader)
                    } else {
                        print("kreach export: stopping on \(number == SIGTERM ? "SIGTERM" : "SIGINT")")
                        fflush(nil)
                        stop()
                    }
                }
                source.resume()
                sources.append(source)
            }
            print("kreach export: listening on http://\(host):\(bound)/metrics")
            fflush(nil)
        }
    }

    /// SIGHUP: the config read again; a bad one leaves the served one in place (one line on stderr).
    func reload(_ server: MetricsServer, _ reader: KernelMemory) {
        do {
            let parsed = try load()
            server.replace(collector: Collector(config: parsed, memory: reader))
            print("kreach export: reloaded \(Terminal.escaped(config)): \(parsed.metrics.count) metrics")
        } catch {
            StandardError.write("kreach export: config not reloaded, still serving the previous one: \(Terminal.escaped("\(error)"))")
        }
        fflush(nil)
    }
}
