import ArgumentParser
import Glibc
import KernelObject
import KreachSupport

/// Set by SIGINT/SIGTERM; the loop exits cleanly at the next check.
nonisolated(unsafe) var watchStop: sig_atomic_t = 0

struct Watch: ParsableCommand {
    static let configuration = CommandConfiguration(
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

    static func parseInterval(_ text: String) -> Double? {
        let units: [(String, Double)] = [("ms", 0.001), ("us", 0.000001), ("s", 1), ("m", 60)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            guard let v = Double(text.dropLast(suffix.count)), v > 0 else { return nil }
            return v * scale
        }
        return Double(text).flatMap { $0 > 0 ? $0 : nil }
    }

    func run() throws {
        let kernel = try options.openKernel()
        let (ev, fmt) = try read.evaluator(kernel)
        let seconds = Watch.parseInterval(interval) ?? 1
        signal(SIGINT) { _ in watchStop = 1 }
        signal(SIGTERM) { _ in watchStop = 1 }
        var last: [String?] = Array(repeating: nil, count: expressions.count)
        var samples = 0
        while watchStop == 0 {
            for (i, expr) in expressions.enumerated() {
                var text: String
                do {
                    switch try ev.evaluate(expr) {
                    case .object(let o): text = try fmt.compact(o)
                    case .entries(let e, _): text = "\(e.count) entries"
                    }
                } catch {
                    text = "error: " + ((error as? ExpressionError)?.message ?? "\(error)")
                }
                if text != last[i] {
                    print("\(Watch.timestamp()) \(expr) = \(text)")
                    last[i] = text
                }
            }
            fflush(nil)  // all output streams (Swift 6 forbids naming the global stdout)
            samples += 1
            if let count, samples >= count { break }
            var ts = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - Double(Int(seconds))) * 1e9))
            var left = timespec()
            while watchStop == 0 && nanosleep(&ts, &left) != 0 && errno == EINTR { ts = left }
        }
    }

    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = time_t(ts.tv_sec)
        var parts = tm()
        localtime_r(&t, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let ms = ts.tv_nsec / 1_000_000
        return "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)).\(ms < 10 ? "00" : ms < 100 ? "0" : "")\(ms)"
    }
}
