import BTF
import Memory

extension KernelMemory {
    /// The kernel pointer stored at `address`, `btf.pointerSize` bytes (the size of `long` in the kernel's BTF,
    /// as libbpf decides it), little-endian like every architecture in `Arch.known`. The container walkers,
    /// per_cpu and the module parameter table read every pointer they follow here.
    func pointer(at address: UInt64, in btf: BTF) throws -> UInt64 {
        littleEndianWord(try read(address, count: Int(btf.pointerSize))[...])
    }
}

/// The little-endian integer in (at most the first 8 of) `bytes`.
func littleEndianWord(_ bytes: ArraySlice<UInt8>) -> UInt64 {
    var v: UInt64 = 0
    for (k, byte) in bytes.prefix(8).enumerated() { v |= UInt64(byte) << (8 * UInt64(k)) }
    return v
}
