import Glibc
import KreachSupport

/// Captures the live kernel's metadata into a directory that `--kernel DIR` reads back.
///
/// Layout (the same as the shared raw captures): kallsyms, modules, btf/*, available_filter_functions,
/// available_events, events/<sys>/<event>/format, kprobes_blacklist, module/<m>/{sections,parameters}/*,
/// uname-r, uname-a, lockdown, kptr_restrict, pid_max, plus `capture-errors` (one line per file that could not be
/// read, with the reason) and `kreach-snapshot` (format marker).
public struct SnapshotCapture {
    public struct Report {
        public var files = 0
        public var bytes = 0
        public var failures: [(String, String)] = []
        public var notes: [String] = []
    }

    public let directory: String
    public init(directory: String) { self.directory = directory }

    public func capture() throws -> Report {
        var report = Report()
        try FileBytes.makeDirectories(directory)
        mountIfMissing(&report)
        let tracing = Kernel.findTracefs()

        copy("/proc/kallsyms", "kallsyms", &report)
        if FileBytes.exists("/proc/modules") {
            copy("/proc/modules", "modules", &report)
        } else {
            report.notes.append("/proc/modules is absent: this kernel has no loadable module support")
            write("", "modules", &report)
        }
        copyDirectory("/sys/kernel/btf", "btf", &report)
        if let tracing {
            copy(tracing + "/available_filter_functions", "available_filter_functions", &report)
            copy(tracing + "/available_events", "available_events", &report)
            copyEvents(tracing + "/events", &report)
        } else {
            report.failures.append(("tracefs", "not mounted and could not be mounted"))
        }
        copy("/sys/kernel/debug/kprobes/blacklist", "kprobes_blacklist", &report)
        copy("/proc/sys/kernel/osrelease", "uname-r", &report)
        copy("/proc/sys/kernel/pid_max", "pid_max", &report)
        copy("/proc/sys/kernel/kptr_restrict", "kptr_restrict", &report)
        copy("/sys/kernel/security/lockdown", "lockdown", &report)
        write(unameAll(), "uname-a", &report)
        copyModules(&report)

        var errors = ""
        for (path, reason) in report.failures { errors += "\(path): \(reason)\n" }
        write(errors, "capture-errors", &report)
        write("kreach-snapshot 1\n", "kreach-snapshot", &report)
        return report
    }

    /// tracefs and debugfs hold the tracing lists, securityfs the lockdown state; mount them when absent and we are root.
    private func mountIfMissing(_ report: inout Report) {
        guard getuid() == 0 else { return }
        if !FileBytes.exists("/sys/kernel/debug/kprobes") && !FileBytes.exists("/sys/kernel/debug/tracing") {
            if mount("debugfs", "/sys/kernel/debug", "debugfs", 0, nil) == 0 { report.notes.append("mounted debugfs on /sys/kernel/debug") }
        }
        if !FileBytes.exists("/sys/kernel/security/lockdown") && FileBytes.isDirectory("/sys/kernel/security") {
            if mount("securityfs", "/sys/kernel/security", "securityfs", 0, nil) == 0 { report.notes.append("mounted securityfs on /sys/kernel/security") }
        }
        if Kernel.findTracefs() == nil {
            if mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, nil) == 0 { report.notes.append("mounted tracefs on /sys/kernel/tracing") }
        }
    }

    private func copy(_ from: String, _ to: String, _ report: inout Report) {
        do {
            let bytes = try FileBytes.read(from)
            try FileBytes.write(bytes, to: directory + "/" + to)
            report.files += 1
            report.bytes += bytes.count
        } catch {
            report.failures.append((from, failureReason(error)))
        }
    }

    private func write(_ text: String, _ to: String, _ report: inout Report) {
        do {
            try FileBytes.write(text, to: directory + "/" + to)
            report.files += 1
        } catch {
            report.failures.append((directory + "/" + to, failureReason(error)))
        }
    }

    private func copyDirectory(_ from: String, _ to: String, _ report: inout Report) {
        do {
            try FileBytes.makeDirectories(directory + "/" + to)
            for name in try FileBytes.list(from) { copy(from + "/" + name, to + "/" + name, &report) }
        } catch {
            report.failures.append((from, failureReason(error)))
        }
    }

    private func copyEvents(_ root: String, _ report: inout Report) {
        guard let systems = try? FileBytes.list(root) else {
            report.failures.append((root, "cannot list"))
            return
        }
        for system in systems where FileBytes.isDirectory(root + "/" + system) {
            guard let events = try? FileBytes.list(root + "/" + system) else { continue }
            for event in events where FileBytes.exists(root + "/\(system)/\(event)/format") {
                do {
                    try FileBytes.makeDirectories(directory + "/events/\(system)/\(event)")
                } catch {
                    report.failures.append((directory + "/events/\(system)/\(event)", failureReason(error)))
                    continue
                }
                copy(root + "/\(system)/\(event)/format", "events/\(system)/\(event)/format", &report)
            }
        }
    }

    private func copyModules(_ report: inout Report) {
        guard let names = try? FileBytes.list("/sys/module") else { return }
        for m in names {
            for part in ["sections", "parameters"] {
                let from = "/sys/module/\(m)/\(part)"
                guard FileBytes.isDirectory(from), let entries = try? FileBytes.list(from), !entries.isEmpty else { continue }
                do { try FileBytes.makeDirectories(directory + "/module/\(m)/\(part)") } catch {
                    report.failures.append((from, failureReason(error)))
                    continue
                }
                for e in entries where !FileBytes.isDirectory(from + "/" + e) {
                    copy(from + "/" + e, "module/\(m)/\(part)/\(e)", &report)
                }
            }
        }
    }

    private func failureReason(_ error: Error) -> String {
        (error as? SystemError)?.reason ?? "\(error)"
    }

    private func unameAll() -> String {
        var u = utsname()
        guard uname(&u) == 0 else { return "" }
        func field<T>(_ v: T) -> String {
            withUnsafeBytes(of: v) { raw in
                let b = raw.bindMemory(to: UInt8.self)
                return String(decoding: b[0..<(b.firstIndex(of: 0) ?? b.count)], as: UTF8.self)
            }
        }
        return [field(u.sysname), field(u.nodename), field(u.release), field(u.version), field(u.machine)].joined(separator: " ") + "\n"
    }
}
