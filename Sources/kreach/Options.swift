import ArgumentParser
import KernelSource
import Memory

/// Options every read-only command shares.
struct KernelOptions: ParsableArguments {
    @Option(name: .customLong("kernel"), help: ArgumentHelp("Read a snapshot directory (from `kreach snapshot`) instead of the live kernel.", valueName: "DIR"))
    var snapshot: String?

    @Option(name: .customLong("core"), help: ArgumentHelp("Read a vmcore (ELF or kdump-compressed) instead of the live kernel; its metadata comes from the dump unless --kernel gives a snapshot of the same kernel.", valueName: "FILE"))
    var core: String?

    @Flag(help: "Print JSON (schema in docs/json.md).")
    var json = false

    func openKernel() throws -> Kernel {
        if let core { return try Core.open(core, snapshot: snapshot).0 }
        return try Kernel(source: snapshot.map { .snapshot($0) } ?? .live)
    }

    /// The kernel and, with --core, the dump's memory.
    func openKernelAndCore() throws -> (Kernel, VMCoreMemory?) {
        if let core { return try Core.open(core, snapshot: snapshot) }
        return (try openKernel(), nil)
    }
}
