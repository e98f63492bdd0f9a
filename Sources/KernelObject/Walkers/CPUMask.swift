/// include/linux/cpumask.h: `for_each_cpu(MASK)` over a `struct cpumask`: the numbers of the CPUs whose bit
/// is set in `bits` below nr_cpu_ids (`Walk.bitLimit`; the bits past it are left undefined by cpumask_copy and
/// friends; without it, all NR_CPUS bits of the array, with a note), smallest first. The whole mask is one read.
enum CPUMaskWalker: ContainerWalker {
    static let helper = ContainerHelper.forEachCpu
    static let headTypes = ["cpumask"]

    static func walk(head: UInt64, _ walk: inout Walk) throws {
        let bits = try walk.member("bits", in: "cpumask")
        let size = try bits.type.size()
        guard size > 0, size <= 1 << 16 else { throw WalkError.unsupportedLayout(walk.helper, "struct cpumask.bits is \(size) bytes") }
        let bytes = try walk.memory.read(head + bits.offset, count: size)
        if walk.bitLimit == nil { walk.warn("for_each_cpu: nr_cpu_ids unknown: all \(size * 8) bits of the mask are read, and bits past nr_cpu_ids may be stale") }
        BitmapWalker.setBits(bytes, below: walk.bitLimit ?? size * 8, &walk)
    }
}
