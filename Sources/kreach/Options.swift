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

    @OptionGroup var cache: CacheOptions

    func openKernel() throws -> Kernel {
        try openKernelAndCore().0
    }

    /// The kernel and, with --core, the dump's memory.
    func openKernelAndCore() throws -> (Kernel, VMCoreMemory?) {
        let (kernel, memory): (Kernel, VMCoreMemory?)
        if let core { (kernel, memory) = try Core.open(core, snapshot: snapshot) } else {
            (kernel, memory) = (try Kernel(source: snapshot.map { .snapshot($0) } ?? .live), nil)
        }
        cache.apply(to: kernel)
        return (kernel, memory)
    }
}

/// Where types inferred from the kernel's code are cached (`CachedInference`).
struct CacheOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Cache types inferred from the kernel's code under DIR/types (default $KREACH_CACHE_DIR, else /var/cache/kreach for root, ~/.cache/kreach for others).", valueName: "DIR"))
    var cacheDir: String?

    @Flag(help: "Neither read nor write the inferred-type cache.")
    var noCache = false

    func apply(to kernel: Kernel) {
        if noCache { kernel.typeCacheRoot = nil } else if let cacheDir { kernel.typeCacheRoot = cacheDir }
    }
}
