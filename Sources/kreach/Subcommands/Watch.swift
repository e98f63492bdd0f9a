import ArgumentParser
import Glibc
import KernelObject
import KreachSupport

struct Watch: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch",
        abstract: "Print a timestamped line whenever the value of an expression changes (Ctrl-C stops).",
        discussion: "Same expressions as `kreach show`. The first sample is always printed.")

    @OptionGroup var options: KernelOptions
    @OptionGroup var read: ReadOptions

    @Option(help: "Sampling interval: 1s, 250ms, 2m.")
    var interval: String = "1s"

    @Option(help: "Stop after this many samples (default: until interrupted).")
    var count: Int?

    @Argument(help: "Expressions.")
    var expressions: [String]

    func validate() throws {
        if expressions.isEmpty { throw ValidationError("give at least one EXPR") }
        if Watch.parseInterval(interval) == nil { throw ValidationError("--interval takes a duration such as 1s, 250ms or 2m") }
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
    }

    static func parseInterval(_ text: String) -> Double? { Sampler.parseInterval(text) }

    func run() throws {
        let kernel = try options.openKernel()
        let (ev, fmt) = try read.evaluator(kernel)
        let sampler = Sampler(evaluator: ev, formatter: fmt, expressions: expressions, interval: Watch.parseInterval(interval) ?? 1, count: count)
        try sampler.run(onChange: { change in
            let text: String
            switch change.reading {
            case .value(let v): text = v
            case .entries(let n): text = "\(n) entries"
            case .error(let message): text = "error: " + message
            }
            print("\(Watch.timestamp(change.time)) \(change.expression) = \(text)")
        }, afterSample: { _ in
            fflush(nil)  // all output streams (Swift 6 forbids naming the global stdout)
        })
    }

    /// HH:MM:SS.mmm local time.
    static func timestamp(_ ts: timespec) -> String {
        var t = time_t(ts.tv_sec)
        var parts = tm()
        localtime_r(&t, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let ms = ts.tv_nsec / 1_000_000
        return "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)).\(ms < 10 ? "00" : ms < 100 ? "0" : "")\(ms)"
    }
}
