import BPF

extension KernelMemory {
    /// The kernel pointer stored at `address` (x86-64: 8 bytes, little-endian). The container walkers and the
    /// module parameter table read every pointer they follow here: the one place to take the size from an Arch.
    func pointer(at address: UInt64) throws -> UInt64 {
        let b = try read(address, count: 8)
        return b.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
    }
}
