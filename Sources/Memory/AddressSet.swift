/// A set of kernel addresses for a walk's loop check: open addressing with linear probing over a power-of-two
/// table, hashed by a Fibonacci multiply (addresses are distinct, aligned pointers: a multiply spreads them;
/// no seeded SipHash per node as `Set` does). 0 marks an empty slot, so 0 is kept apart. Grows at half full.
public struct AddressSet: Sendable {
    private var slots: [UInt64]
    private var shift: UInt64
    private var hasZero = false
    public private(set) var count = 0

    /// Room for `capacity` addresses before the first growth.
    public init(capacity: Int = 64) {
        var size = 16
        while size < 2 * capacity && size < 1 << 40 { size <<= 1 }
        slots = [UInt64](repeating: 0, count: size)
        shift = UInt64(64 - size.trailingZeroBitCount)
    }

    /// Adds `address`; `inserted` is false when it was there already (as `Set.insert` says).
    @discardableResult
    public mutating func insert(_ address: UInt64) -> (inserted: Bool, memberAfterInsert: UInt64) {
        (add(address), address)
    }

    private mutating func add(_ address: UInt64) -> Bool {
        if address == 0 {
            defer { hasZero = true }
            if hasZero { return false }
            count += 1
            return true
        }
        if 2 * (count + 1) > slots.count { grow() }
        let mask = slots.count - 1
        var i = Int(truncatingIfNeeded: (address &* 0x9E37_79B9_7F4A_7C15) >> shift)
        while true {
            let s = slots[i]
            if s == 0 {
                slots[i] = address
                count += 1
                return true
            }
            if s == address { return false }
            i = (i + 1) & mask
        }
    }

    public func contains(_ address: UInt64) -> Bool {
        if address == 0 { return hasZero }
        let mask = slots.count - 1
        var i = Int(truncatingIfNeeded: (address &* 0x9E37_79B9_7F4A_7C15) >> shift)
        while true {
            let s = slots[i]
            if s == 0 { return false }
            if s == address { return true }
            i = (i + 1) & mask
        }
    }

    private mutating func grow() {
        let old = slots
        slots = [UInt64](repeating: 0, count: old.count * 2)
        shift -= 1
        let mask = slots.count - 1
        for a in old where a != 0 {
            var i = Int(truncatingIfNeeded: (a &* 0x9E37_79B9_7F4A_7C15) >> shift)
            while slots[i] != 0 { i = (i + 1) & mask }
            slots[i] = a
        }
    }
}
