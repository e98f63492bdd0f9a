/// include/linux/find.h: `for_each_set_bit(ADDR, NBITS)` over a bitmap (an array of unsigned long, a struct of
/// them such as `sigset_t`, or a pointer to the first word): the numbers of the bits set among the first NBITS
/// (`Walk.bitLimit`), smallest first. The bitmap is one read of its bytes.
enum BitmapWalker: ContainerWalker {
    static let helper = ContainerHelper.forEachSetBit
    /// Any object: a bitmap is words, whatever type holds them.
    static let headTypes: [String] = []
    /// NBITS read at most (a 2 MiB bitmap).
    static let maxBits = 1 << 24

    static func walk(head: UInt64, _ walk: inout Walk) throws {
        guard let bits = walk.bitLimit, bits >= 0, bits <= maxBits else {
            throw WalkError.unsupportedLayout(walk.helper, "NBITS must be 0 to \(maxBits)")
        }
        guard bits > 0 else { return }
        setBits(try walk.memory.read(head, count: (bits + 7) / 8), below: bits, &walk)
    }

    /// Adds the number of each bit set in `bytes` below `limit`, smallest first (`for_each_set_bit`). Bit k of a
    /// bitmap is bit k % 8 of byte k / 8 on a little-endian kernel (unsigned long words).
    static func setBits(_ bytes: [UInt8], below limit: Int, _ walk: inout Walk) {
        for (n, byte) in bytes.enumerated() where byte != 0 {
            for b in 0..<8 where byte & (1 << b) != 0 {
                let bit = UInt64(n * 8 + b)
                guard bit < limit else { return }
                guard walk.add(entry: bit, index: bit) else { return }
            }
        }
    }
}
