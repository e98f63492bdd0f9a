import Memory

/// include/linux/hashtable.h: `hash_for_each(TYPE, TABLE, MEMBER)` over an array of bucket heads:
/// DEFINE_HASHTABLE's `struct hlist_head name[1 << bits]`, or a table allocated at run time given as a pointer
/// and its bucket count (`hash_for_each(TYPE, PTR, MEMBER, BUCKETS)`: `net->dev_index_head`, NETDEV_HASHENTRIES).
/// Buckets of `struct hlist_nulls_head` (the socket hashes, `inet_ehash_bucket.chain`, walked per bucket with
/// sk_nulls_for_each by the kernel) end at their nulls marker. Bucket 0 first, each chain in its order; each entry's
/// index is its bucket number. The heads
/// are read in slices of 64 KiB; each non-empty chain is walked like `hlist[_nulls]_for_each_entry` (inside
/// the kernel when the reader is BPF).
enum HashWalker: ContainerWalker {
    static let helper = ContainerHelper.hashForEach
    static let headTypes = ["hlist_head", "hlist_nulls_head"]
    /// Buckets read at most (the largest boot-time hashes, alloc_large_system_hash, have a few million).
    static let maxBuckets = 1 << 26
    /// Bytes of heads per read.
    static let slice = 1 << 16
    /// Nodes per in-kernel chain run.
    static let chainBatch = 16

    static func walk(head: UInt64, _ walk: inout Walk) throws {
        guard let buckets = walk.buckets, buckets >= 0, buckets <= maxBuckets else {
            throw WalkError.unsupportedLayout(walk.helper, "BUCKETS must be 0 to \(maxBuckets)")
        }
        // Buckets are walked one chain at a time: say at once that no chain can be walked in the kernel here.
        if walk.mode == .kernel, !(walk.memory is BPFMemory) { throw WalkError.noKernelWalk(walk.helper, reader: walk.memory.name) }
        let nulls = walk.headType == "hlist_nulls_head"
        let first = try walk.offset(of: "first", in: walk.headType)
        let next = try walk.offset(of: "next", in: nulls ? "hlist_nulls_node" : "hlist_node")
        let headSize = try walk.size(of: walk.headType)
        guard headSize > 0, first + UInt64(walk.vmlinux.pointerSize) <= UInt64(headSize) else {
            throw WalkError.unsupportedLayout(walk.helper, "struct \(walk.headType) is \(headSize) bytes")
        }
        let perSlice = max(1, slice / headSize)
        // Chains of a few nodes: a short walk program, loaded in a moment (1,024 nodes take the verifier ~1 s).
        walk.chainBatch = chainBatch
        var bucket = 0
        while bucket < buckets {
            let n = min(perSlice, buckets - bucket)
            let bytes = try walk.memory.read(head &+ UInt64(bucket * headSize), count: n * headSize)
            let firsts = try heads(bytes, count: n, stride: headSize, at: Int(first), pointerSize: Int(walk.vmlinux.pointerSize))
            for (k, node) in firsts.enumerated() {
                guard nulls ? !HListNullsWalker.isNulls(node) : node != 0 else { continue }  // an empty bucket
                let before = walk.entries.count
                if nulls {
                    try HListNullsWalker.chain(from: node, next: next, &walk)
                } else {
                    try HListWalker.chain(from: node, next: next, &walk)
                }
                walk.index(from: before, UInt64(bucket + k))
                if walk.stopped { return }
            }
            bucket += n
        }
    }

    /// The `first` pointer of each of `count` heads `stride` bytes apart in `bytes` (one pass over raw memory:
    /// most buckets are empty, and there may be millions).
    static func heads(_ bytes: [UInt8], count: Int, stride: Int, at offset: Int, pointerSize: Int) throws -> [UInt64] {
        guard pointerSize == 8 || pointerSize == 4, count == 0 || (count - 1) * stride + offset + pointerSize <= bytes.count else {
            throw WalkError.unsupportedLayout(.hashForEach, "\(pointerSize)-byte pointers in \(stride)-byte heads")
        }
        return bytes.withUnsafeBytes { raw in
            (0..<count).map { k in
                pointerSize == 8 ? UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: k * stride + offset, as: UInt64.self))
                    : UInt64(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: k * stride + offset, as: UInt32.self)))
            }
        }
    }
}
