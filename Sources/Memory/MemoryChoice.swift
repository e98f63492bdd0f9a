import BPF

/// Which memory reader to use.
public enum MemoryChoice: String, CaseIterable, Sendable {
    case auto, bpf, kcore

    /// Opens the chosen reader; `auto` tries BPF, then /proc/kcore, and explains both failures.
    public func open() throws -> KernelMemory {
        switch self {
        case .bpf: return try BPFMemory()
        case .kcore: return try KcoreMemory()
        case .auto:
            do { return try BPFMemory() } catch let bpfError {
                do { return try KcoreMemory() } catch let kcoreError {
                    throw MemoryError.noReader(bpf: bpfError, kcore: kcoreError)
                }
            }
        }
    }
}

