/// include/linux/cpumask.h: `for_each_cpu(MASK)` over a `struct cpumask`: the numbers of the CPUs whose bit
/// is set in `bits` (NR_CPUS bits, as vmlinux BTF sizes the array), smallest first. The whole mask is one read.
enum CPUMaskWalker: ContainerWalker {
    static let helper = ContainerHelper.forEachCpu
    static let headTypes = ["cpumask"]

    static func walk(head: UInt64, _ walk: inout Walk) throws {
        let bits = try walk.member("bits", in: "cpumask")
        let size = try bits.type.size()
        guard size > 0, size <= 1 << 16 else { throw WalkError.unsupportedLayout(walk.helper, "struct cpumask.bits is \(size) bytes") }
        let bytes = try walk.memory.read(head + bits.offset, count: size)
        // Bit k of the bitmap is bit k % 8 of byte k / 8 on a little-endian kernel (unsigned long words).
        for (n, byte) in bytes.enumerated() where byte != 0 {
            for b in 0..<8 where byte & (1 << b) != 0 {
                let cpu = UInt64(n * 8 + b)
                guard walk.add(entry: cpu, index: cpu) else { return }
            }
        }
    }
}
