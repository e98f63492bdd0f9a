import ArgumentParser
import KernelSource

/// Options every read-only command shares.
struct KernelOptions: ParsableArguments {
    @Option(name: .customLong("kernel"), help: ArgumentHelp("Read a snapshot directory (from `kreach snapshot`) instead of the live kernel.", valueName: "DIR"))
    var snapshot: String?

    @Flag(help: "Print JSON (schema in docs/json.md).")
    var json = false

    func openKernel() throws -> Kernel {
        try Kernel(source: snapshot.map { .snapshot($0) } ?? .live)
    }
}
