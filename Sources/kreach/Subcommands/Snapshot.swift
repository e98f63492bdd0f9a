import ArgumentParser
import KernelSource
import KreachSupport
import TypeInference

struct Snapshot: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Capture the live kernel's metadata into DIR, for --kernel DIR anywhere.",
        discussion: """
            Captures kallsyms, /proc/modules, all of /sys/kernel/btf, available_filter_functions, available_events
            and every tracepoint format, the kprobe blacklist, module sections and parameters, uname, pid_max,
            kptr_restrict and the lockdown state. Mounts tracefs/debugfs when absent (as root). Files that can't
            be read are listed with the reason in DIR/capture-errors instead of failing the capture.
            DIR must be new (its parent existing) or an empty directory you own; it is made mode 0700 and its
            files 0600 (they hold kernel addresses). Refused when kallsyms hides addresses (not root).
            The kernel's notes (its build-id) and its inferred-type cache (DIR/type-cache, when types were
            inferred on this kernel) are carried too: `--kernel DIR` reads types from them.
            """)

    @Argument(help: "Directory to create (or an empty directory you own).")
    var directory: String

    @OptionGroup var cache: CacheOptions

    func run() throws {
        var capture = SnapshotCapture(directory: directory)
        // The live kernel's inferred types, carried for commands that read the snapshot.
        let live = try Kernel(source: .live)
        cache.apply(to: live)
        let carried = CachedInference.liveCacheFile(live)
        if let bytes = carried.bytes { capture.extraFiles.append((CachedInference.snapshotName, bytes)) }
        var report = try capture.capture()
        if let note = carried.note { report.notes.append(note) }
        for note in report.notes { print("note: \(note)") }
        let mib = Double(report.bytes) / 1_048_576
        print("captured \(report.files) files (\(Int(mib.rounded())) MiB) into \(directory)")
        if !report.failures.isEmpty {
            print("\(report.failures.count) could not be read (listed in \(directory)/capture-errors):")
            for (path, reason) in report.failures { print("  \(path): \(reason)") }
        }
    }
}
