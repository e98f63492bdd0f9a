import Dispatch
import Foundation
import Glibc
import XCTest
import Memory
@testable import KernelObject
import KernelSource
import KreachSupport
import KreachTestSupport

/// The sampling loop `kreach watch` uses: change detection, count, stop on SIGTERM, on the live kernel.
final class SamplerTests: XCTestCase {
    func sampler(_ expressions: [String], interval: Double, count: Int?) throws -> Sampler {
        guard Host.isRoot else { throw XCTSkip(Host.skipReason("not root: BPF needs CAP_BPF + CAP_PERFMON, kallsyms CAP_SYSLOG")) }
        let ev = try Evaluator(kernel: try Kernel(source: .live), memory: try BPFMemory())
        return Sampler(evaluator: ev, formatter: ObjectFormatter(evaluator: ev), expressions: expressions, interval: interval, count: count)
    }

    /// This thread's name, changed between samples through /proc/thread-self/comm (the kernel's task->comm):
    /// it is reported at every sample, the unchanging pid once, a bad expression once as an error, and the
    /// loop stops at the count.
    func testReportsChangesAndStopsAtCount() throws {
        let s = try sampler(["current->pid", "current->comm", "current->nosuch"], interval: 0.001, count: 3)
        let original = try FileBytes.readText("/proc/thread-self/comm")
        defer { try? original.write(toFile: "/proc/thread-self/comm", atomically: false, encoding: .utf8) }
        try "kreach-s0".write(toFile: "/proc/thread-self/comm", atomically: false, encoding: .utf8)
        var changes: [(String, Sampler.Reading)] = []
        let samples = try s.run(onChange: { changes.append(($0.expression, $0.reading)) }, afterSample: { n in
            try? "kreach-s\(n)".write(toFile: "/proc/thread-self/comm", atomically: false, encoding: .utf8)
        })
        XCTAssertEqual(samples, 3)
        let tid = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self").split(separator: "/").last.map(String.init) ?? ""
        XCTAssertEqual(changes.filter { $0.0 == "current->pid" }.map(\.1), [.value(tid)])
        XCTAssertEqual(changes.filter { $0.0 == "current->comm" }.map(\.1), [.value("\"kreach-s0\""), .value("\"kreach-s1\""), .value("\"kreach-s2\"")])
        let errors = changes.filter { $0.0 == "current->nosuch" }.map(\.1)
        XCTAssertEqual(errors.count, 1)
        guard case .error(let message) = errors.first else { return XCTFail("\(errors)") }
        XCTAssertTrue(message.contains("struct task_struct has no member nosuch"), message)
    }

    /// SIGTERM while the sampler waits out an hour's interval ends it at once, though the signal is handled
    /// on another thread (the sampler's thread blocks it): the handler wakes the wait. The event waited for
    /// is the sampler's thread blocked in poll (its /proc syscall). SIGTERM's previous disposition is back
    /// afterwards. The sampler runs on its own thread with a deadline.
    func testStopsOnSIGTERMFromAnotherThreadAndRestoresTheHandler() throws {
        nonisolated(unsafe) let s = try sampler(["current->pid"], interval: 3600, count: nil)
        // A known disposition to find again afterwards: ignore.
        var original = sigaction(), ignore = sigaction()
        ignore.__sigaction_handler.sa_handler = SIG_IGN
        sigaction(SIGTERM, &ignore, &original)
        defer { sigaction(SIGTERM, &original, nil) }
        let done = DispatchSemaphore(value: 0), sampled = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var samples = -1
        nonisolated(unsafe) var failure: Error?
        nonisolated(unsafe) var tid = ""
        let thread = Thread {
            var block = sigset_t()
            sigemptyset(&block)
            sigaddset(&block, SIGTERM)
            pthread_sigmask(SIG_BLOCK, &block, nil)
            tid = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self"))?.split(separator: "/").last.map(String.init) ?? ""
            do {
                samples = try s.run(onChange: { _ in }, afterSample: { _ in sampled.signal() })
            } catch { failure = error }
            done.signal()
        }
        thread.start()
        XCTAssertEqual(sampled.wait(timeout: .now() + Run.defaultTimeout), .success, "no first sample")
        // Blocked in poll(2) (x86-64 syscall 7): /proc/self/task/TID/syscall starts with its number.
        let deadline = Date().addingTimeInterval(Run.defaultTimeout)
        while (try? FileBytes.readText("/proc/self/task/\(tid)/syscall"))?.hasPrefix("7 ") != true {
            guard Date() < deadline else { s.stop(); return XCTFail("the sampler's thread never waited in poll") }
            sched_yield()
        }
        kill(getpid(), SIGTERM)
        guard done.wait(timeout: .now() + Run.defaultTimeout) == .success else {
            s.stop()
            _ = done.wait(timeout: .now() + Run.defaultTimeout)
            return XCTFail("the sampler did not stop on SIGTERM within \(Run.defaultTimeout) s")
        }
        XCTAssertNil(failure)
        XCTAssertEqual(samples, 1)
        var after = sigaction()
        sigaction(SIGTERM, nil, &after)
        XCTAssertEqual(unsafeBitCast(after.__sigaction_handler.sa_handler, to: Int.self), unsafeBitCast(SIG_IGN, to: Int.self),
                       "SIGTERM's disposition is restored")
    }
}
