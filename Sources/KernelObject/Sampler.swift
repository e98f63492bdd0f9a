import Glibc

/// Set by the SIGINT/SIGTERM handler a running `Sampler` installs.
nonisolated(unsafe) private var samplerStopRequested: sig_atomic_t = 0
/// The write end of the running sampler's wake-up pipe (-1: none); the signal handler writes a byte to it.
nonisolated(unsafe) private var samplerWakeFD: Int32 = -1

/// Samples expressions at a fixed interval and reports each one whenever its value changes (the first
/// sample reports all): `kreach watch`, and the loop an exporter reuses.
///
/// `run` stops after `count` samples, on `stop()` (from any thread), or on SIGINT/SIGTERM, which it
/// catches while it runs (and then restores the previous handlers). The wait between samples is a poll on
/// a pipe the handler and `stop()` write to, so a stop request ends the wait at once. One sampler runs at
/// a time in a process.
public final class Sampler {
    public let evaluator: Evaluator
    public let formatter: ObjectFormatter
    public let expressions: [String]
    /// Seconds between the starts of two samples' waits (> 0).
    public let interval: Double
    /// Samples taken at most; nil: until stopped.
    public let count: Int?

    /// What one expression read in one sample.
    public enum Reading: Equatable, Sendable {
        /// The value on one line (`ObjectFormatter.compact`).
        case value(String)
        /// A container walk: how many entries.
        case entries(Int)
        /// Evaluation or reading failed: the message.
        case error(String)
    }

    /// An expression whose reading differs from the previous sample's.
    public struct Change: Sendable {
        public let index: Int
        public let expression: String
        public let reading: Reading
        /// CLOCK_REALTIME when the expression was read.
        public let time: timespec
    }

    private var pipeFDs: [Int32] = [-1, -1]

    public init(evaluator: Evaluator, formatter: ObjectFormatter, expressions: [String], interval: Double, count: Int? = nil) {
        self.evaluator = evaluator
        self.formatter = formatter
        self.expressions = expressions
        self.interval = interval
        self.count = count
    }

    /// An interval such as `1s`, `250ms`, `100us`, `2m` or `0.5` (seconds) in seconds; nil unless > 0.
    public static func parseInterval(_ text: String) -> Double? {
        let units: [(String, Double)] = [("ms", 0.001), ("us", 0.000001), ("s", 1), ("m", 60)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            guard let v = Double(text.dropLast(suffix.count)), v > 0 else { return nil }
            return v * scale
        }
        return Double(text).flatMap { $0 > 0 ? $0 : nil }
    }

    /// Reads one expression now.
    public func read(_ expression: String) -> Reading {
        do {
            switch try evaluator.evaluate(expression) {
            case .object(let o): return .value(try formatter.compact(o))
            case .entries(let e, _): return .entries(e.count)
            }
        } catch {
            return .error((error as? ExpressionError)?.message ?? "\(error)")
        }
    }

    /// Samples until `count`, `stop()`, SIGINT or SIGTERM; calls `onChange` for each change and `afterSample`
    /// with the number of samples taken after each. Returns the number of samples taken.
    @discardableResult
    public func run(onChange: (Change) -> Void, afterSample: (Int) -> Void = { _ in }) throws -> Int {
        guard pipe(&pipeFDs) == 0 else { throw SamplerError.pipe(errno: errno) }
        for fd in pipeFDs {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }
        samplerStopRequested = 0
        samplerWakeFD = pipeFDs[1]
        var handler = sigaction()
        handler.__sigaction_handler.sa_handler = { _ in
            samplerStopRequested = 1
            var byte: UInt8 = 1
            _ = write(samplerWakeFD, &byte, 1)
        }
        sigemptyset(&handler.sa_mask)
        var oldInt = sigaction(), oldTerm = sigaction()
        sigaction(SIGINT, &handler, &oldInt)
        sigaction(SIGTERM, &handler, &oldTerm)
        defer {
            sigaction(SIGINT, &oldInt, nil)
            sigaction(SIGTERM, &oldTerm, nil)
            samplerWakeFD = -1
            for fd in pipeFDs { close(fd) }
            pipeFDs = [-1, -1]
        }
        var last: [Reading?] = Array(repeating: nil, count: expressions.count)
        var samples = 0
        while samplerStopRequested == 0 {
            for (i, expression) in expressions.enumerated() {
                let reading = read(expression)
                guard reading != last[i] else { continue }
                last[i] = reading
                var now = timespec()
                clock_gettime(CLOCK_REALTIME, &now)
                onChange(Change(index: i, expression: expression, reading: reading, time: now))
            }
            samples += 1
            afterSample(samples)
            if let count, samples >= count { break }
            if waitForStop(seconds: interval) { break }
        }
        return samples
    }

    /// Ends a running `run` (its current sample finishes first). Safe from any thread.
    public func stop() {
        samplerStopRequested = 1
        var byte: UInt8 = 1
        if pipeFDs[1] >= 0 { _ = write(pipeFDs[1], &byte, 1) }
    }

    /// Waits `seconds`, or less when a stop is requested; true when it was.
    private func waitForStop(seconds: Double) -> Bool {
        var start = timespec()
        clock_gettime(CLOCK_MONOTONIC, &start)
        while samplerStopRequested == 0 {
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            let elapsed = Double(now.tv_sec - start.tv_sec) + Double(now.tv_nsec - start.tv_nsec) / 1e9
            let left = seconds - elapsed
            if left <= 0 { return false }
            // poll's timeout is in milliseconds: shorter intervals wait 1 ms.
            let milliseconds = Int32(min((left * 1000).rounded(.up), Double(Int32.max)))
            var fd = pollfd(fd: pipeFDs[0], events: Int16(POLLIN), revents: 0)
            let n = poll(&fd, 1, milliseconds)
            if n > 0 { return true }
            if n < 0 && errno != EINTR { return false }
        }
        return true
    }
}

/// A sampler that could not start.
public enum SamplerError: Error, CustomStringConvertible {
    case pipe(errno: Int32)
    public var description: String {
        switch self {
        case .pipe(let e): return "can't create the sampler's wake-up pipe: \(String(cString: strerror(e)))"
        }
    }
}
