import Glibc

/// A set of names read from a text file, one per line, kept as ranges of the file's bytes (no String per
/// name): for the kernel's long lists (available_filter_functions, the kprobe blacklist).
public struct NameSet {
    let buffer: ByteBuffer
    let starts: [UInt32]
    let lengths: [UInt16]
    let slots: [UInt32]

    /// `field` picks the name's byte range in each line (start, length), or nil to skip the line. A line's
    /// CR before its LF (a CRLF capture) is not part of the line. A name listed several times (static functions
    /// of the same name in available_filter_functions) is indexed once, so building stays linear.
    public init(buffer: ByteBuffer, field: (UnsafePointer<UInt8>, Int) -> (Int, Int)?) {
        self.buffer = buffer
        var starts: [UInt32] = [], lengths: [UInt16] = []
        let p = buffer.pointer.assumingMemoryBound(to: UInt8.self)
        var i = 0
        let n = buffer.count
        while i < n {
            let end = memchr(p + i, 10, n - i).map { UnsafePointer<UInt8>($0.assumingMemoryBound(to: UInt8.self)) - p } ?? n
            let contentEnd = end > i && p[end - 1] == 13 ? end - 1 : end
            if let (s, l) = field(p + i, contentEnd - i), l > 0, l < Int(UInt16.max) {
                starts.append(UInt32(i + s))
                lengths.append(UInt16(l))
            }
            i = end + 1
        }
        var capacity = 16
        while capacity < starts.count * 2 { capacity <<= 1 }
        var slots = [UInt32](repeating: 0, count: capacity)
        insert: for k in 0..<starts.count {
            let name = p + Int(starts[k]), length = Int(lengths[k])
            var slot = Int(truncatingIfNeeded: NameSet.hash(name, length)) & (capacity - 1)
            while slots[slot] != 0 {
                let other = Int(slots[slot] - 1)
                if Int(lengths[other]) == length && memcmp(p + Int(starts[other]), name, length) == 0 { continue insert }
                slot = (slot + 1) & (capacity - 1)
            }
            slots[slot] = UInt32(k + 1)
        }
        self.starts = starts
        self.lengths = lengths
        self.slots = slots
    }

    public var count: Int { starts.count }

    static func hash(_ p: UnsafePointer<UInt8>, _ length: Int) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for k in 0..<length { h = (h ^ UInt64(p[k])) &* 0x0000_0100_0000_01b3 }
        return h
    }

    public func contains(_ name: String) -> Bool {
        var q = name
        return q.withUTF8 { b -> Bool in
            guard let base = b.baseAddress, b.count > 0 else { return false }
            let mask = slots.count - 1
            var slot = Int(truncatingIfNeeded: NameSet.hash(base, b.count)) & mask
            while slots[slot] != 0 {
                let k = Int(slots[slot] - 1)
                if Int(lengths[k]) == b.count && memcmp(buffer.pointer + Int(starts[k]), base, b.count) == 0 { return true }
                slot = (slot + 1) & mask
            }
            return false
        }
    }
}
