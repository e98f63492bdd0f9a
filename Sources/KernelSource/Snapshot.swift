import Glibc
import KernelSymbols
import KreachSupport

/// Captures the live kernel's metadata into a directory that `--kernel DIR` reads back.
///
/// Layout (the same as the shared raw captures): kallsyms, modules, btf/*, available_filter_functions,
/// available_events, events/<sys>/<event>/format, kprobes_blacklist, module/<m>/{sections,parameters}/*,
/// uname-r, uname-a, lockdown, kptr_restrict, pid_max, notes (/sys/kernel/notes: the build-id), plus `capture-errors` (one line per file that could not be
/// read, with the reason) and `kreach-snapshot` (format marker).
public struct SnapshotCapture {
    public struct Report {
        public var files = 0
        public var bytes = 0
        public var failures: [(String, String)] = []
        public var notes: [String] = []
    }

    public let directory: String
    /// Files written into the snapshot as well (name, bytes): the inferred-type cache.
    public var extraFiles: [(String, [UInt8])] = []
    public init(directory: String) { self.directory = directory }

    /// Captures into `directory`, which must not exist (its parent must) or be an empty directory owned by
    /// this user; it is made mode 0700 and every file in it 0600, whatever the umask (the capture holds
    /// real kernel addresses). Nothing is written through a symbolic link or outside it
    /// (`PrivateDirectory`). Refused, with nothing written, when /proc/kallsyms hides its addresses
    /// (not root / no CAP_SYSLOG, or kptr_restrict=2): such a snapshot could not name any address.
    public func capture() throws -> Report {
        var report = Report()
        var kallsyms: ByteBuffer?
        do {
            let buffer = try ByteBuffer.read("/proc/kallsyms", limit: KernelFile.kallsyms.limit)
            do {
                _ = try Kallsyms(buffer: buffer, source: "/proc/kallsyms")
            } catch .addressesHidden {
                throw KernelError("no snapshot written: " + SymbolError.addressesHidden(source: "/proc/kallsyms").description)
            } catch {
                // Other kallsyms problems are the reader's to report; the capture keeps the file as it is.
            }
            kallsyms = buffer
        } catch let error as FileError {
            report.failures.append(("/proc/kallsyms", error.reason))
        }
        let out = try PrivateDirectory(creating: directory)
        mountIfMissing(&report)
        let tracing = Kernel.findTracefs()

        if let kallsyms { write(kallsyms.bytes, "kallsyms", out, &report) }
        if FileBytes.exists("/proc/modules") {
            copy("/proc/modules", "modules", .modules, out, &report)
        } else {
            report.notes.append("/proc/modules is absent: this kernel has no loadable module support")
            write("", "modules", out, &report)
        }
        copyDirectory("/sys/kernel/btf", "btf", .btf, out, &report)
        if let tracing {
            copy(tracing + "/available_filter_functions", "available_filter_functions", .availableFilterFunctions, out, &report)
            copy(tracing + "/available_events", "available_events", .availableEvents, out, &report)
            copyEvents(tracing + "/events", out, &report)
        } else {
            report.failures.append(("tracefs", "not mounted and could not be mounted"))
        }
        copy("/sys/kernel/debug/kprobes/blacklist", "kprobes_blacklist", .kprobesBlacklist, out, &report)
        copy("/proc/sys/kernel/osrelease", "uname-r", .release, out, &report)
        copy("/sys/kernel/notes", "notes", .notes, out, &report)
        for (name, bytes) in extraFiles { bytes.withUnsafeBytes { write($0, name, out, &report) } }
        copy("/proc/sys/kernel/pid_max", "pid_max", .kptrRestrict, out, &report)
        copy("/proc/sys/kernel/kptr_restrict", "kptr_restrict", .kptrRestrict, out, &report)
        copy("/sys/kernel/security/lockdown", "lockdown", .lockdown, out, &report)
        write(unameAll(), "uname-a", out, &report)
        copyModules(out, &report)
        copyModuleObjects(out, &report)

        var errors = ""
        for (path, reason) in report.failures { errors += "\(path): \(reason)\n" }
        write(errors, "capture-errors", out, &report)
        write("kreach-snapshot 1\n", "kreach-snapshot", out, &report)
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

    /// Copies the live file `from` (read under `kind`'s cap) to `to` in the snapshot.
    private func copy(_ from: String, _ to: String, _ kind: KernelFile, _ out: PrivateDirectory, _ report: inout Report) {
        do {
            let buffer = try ByteBuffer.read(from, limit: kind.limit)
            write(buffer.bytes, to, out, &report)
        } catch {
            report.failures.append((from, failureReason(error)))
        }
    }

    private func write(_ bytes: UnsafeRawBufferPointer, _ to: String, _ out: PrivateDirectory, _ report: inout Report) {
        do {
            try out.create(to, bytes)
            report.files += 1
            report.bytes += bytes.count
        } catch {
            report.failures.append((directory + "/" + to, failureReason(error)))
        }
    }

    private func write(_ text: String, _ to: String, _ out: PrivateDirectory, _ report: inout Report) {
        Array(text.utf8).withUnsafeBytes { write($0, to, out, &report) }
    }

    private func copyDirectory(_ from: String, _ to: String, _ kind: KernelFile, _ out: PrivateDirectory, _ report: inout Report) {
        do {
            try out.makeDirectory(to)
            for name in try FileBytes.list(from) { copy(from + "/" + name, to + "/" + name, kind, out, &report) }
        } catch {
            report.failures.append((from, failureReason(error)))
        }
    }

    private func copyEvents(_ root: String, _ out: PrivateDirectory, _ report: inout Report) {
        guard let systems = try? FileBytes.list(root) else {
            report.failures.append((root, "cannot list"))
            return
        }
        for system in systems where FileBytes.isDirectory(root + "/" + system) {
            guard let events = try? FileBytes.list(root + "/" + system) else { continue }
            for event in events where FileBytes.exists(root + "/\(system)/\(event)/format") {
                copy(root + "/\(system)/\(event)/format", "events/\(system)/\(event)/format", .events, out, &report)
            }
        }
    }

    private func copyModules(_ out: PrivateDirectory, _ report: inout Report) {
        guard let names = try? FileBytes.list("/sys/module") else { return }
        for m in names {
            for part in ["sections", "parameters"] {
                let from = "/sys/module/\(m)/\(part)"
                guard FileBytes.isDirectory(from), let entries = try? FileBytes.list(from), !entries.isEmpty else { continue }
                do { try out.makeDirectory("module/\(m)/\(part)") } catch {
                    report.failures.append((from, failureReason(error)))
                    continue
                }
                for e in entries where !FileBytes.isDirectory(from + "/" + e) {
                    copy(from + "/" + e, "module/\(m)/\(part)/\(e)", .moduleDirectory, out, &report)
                }
            }
        }
    }

    /// Each loaded module's .ko (`SnapshotModuleObjects`): found through /lib/modules/RELEASE/modules.dep,
    /// decompressed, kept only when its build-id is the loaded module's (/sys/module/M/notes), stored zstd-compressed
    /// under that build-id; `ko/index` maps module names to build-ids. A module without one is a capture error.
    private func copyModuleObjects(_ out: PrivateDirectory, _ report: inout Report) {
        guard let live = try? Kernel(source: .live), let modules = try? live.modules(), !modules.isEmpty else { return }
        var index = ""
        var written: Set<[UInt8]> = []
        for module in modules.map(\.name) {
            let notes = "/sys/module/\(module)/notes/.note.gnu.build-id"
            guard let id = live.liveModuleBuildID(module) else {
                report.failures.append((notes, "no GNU build-id: the module's .ko is not kept"))
                continue
            }
            do {
                let path = try live.moduleFile(module)
                let bytes = try ByteBuffer.readDecompressing(path, limit: KernelFile.moduleObjectLimit)
                let fileID = try ELFFile(bytes: bytes.toArray(), source: path).buildID
                guard fileID == id else {
                    report.failures.append((path, "build-id \(fileID.map(Hex.string) ?? "missing"), the loaded \(module)'s is \(Hex.string(id)) (\(notes)): not kept"))
                    continue
                }
                if !written.contains(id) {
                    guard let compressed = Compression.zstdCompress(bytes.bytes) else {
                        report.failures.append((path, "zstd compression failed"))
                        continue
                    }
                    let before = report.failures.count
                    write(compressed, SnapshotModuleObjects.file(buildID: id), out, &report)
                    guard report.failures.count == before else { continue }
                    written.insert(id)
                }
                index += "\(module) \(Hex.string(id))\n"
            } catch {
                report.failures.append(("\(module).ko", failureReason(error)))
            }
        }
        write(index, SnapshotModuleObjects.index, out, &report)
    }

    private func write(_ bytes: [UInt8], _ to: String, _ out: PrivateDirectory, _ report: inout Report) {
        bytes.withUnsafeBytes { write($0, to, out, &report) }
    }

    private func failureReason(_ error: Error) -> String {
        (error as? FileError)?.reason ?? (error as? PrivateDirectoryError)?.reason ?? "\(error)"
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
