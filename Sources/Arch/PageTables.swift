/// Virtual → physical translation through a kernel's own page tables, as a dump holds them.
public protocol PageTableWalker: Sendable {
    /// The physical address `address` maps to, walking from the top-level table at physical `root` with
    /// `levels` levels; `entry(physical)` reads one 8-byte table entry from the dump.
    func translate(_ address: UInt64, root: UInt64, levels: Int,
                   entry: (UInt64) throws -> UInt64) throws -> UInt64
}

/// An address the page tables don't map.
public struct TranslationFault: Error, CustomStringConvertible, Sendable, Equatable {
    public let address: UInt64
    /// The table level whose entry is not present ("PML4", "PDPT"…), or why the walk stopped.
    public let reason: String
    public var description: String { reason }
}

extension X86_64: PageTableWalker {
    /// The page-table levels from the top: PML5 only with 5-level paging (LA57), then PML4, PDPT, PD, PT.
    /// Each index is 9 bits of the address; a PS bit in a PDPT or PD entry ends the walk at a 1 GiB or
    /// 2 MiB page (Intel SDM vol. 3, 4.5).
    static let levelNames = ["PML5", "PML4", "PDPT", "PD", "PT"]
    /// Bits 51:12 of an entry: the next table's or the page's physical address.
    static let addressMask: UInt64 = 0x000f_ffff_ffff_f000
    static let present: UInt64 = 1
    static let pageSizeBit: UInt64 = 1 << 7

    public func translate(_ address: UInt64, root: UInt64, levels: Int,
                          entry: (UInt64) throws -> UInt64) throws -> UInt64 {
        guard levels == 4 || levels == 5 else {
            throw TranslationFault(address: address, reason: "\(levels)-level paging is not x86-64's (4 or 5)")
        }
        // Bits above the translated width must copy its top bit (a canonical address), or the walk would
        // alias another address.
        let width = 12 + 9 * levels
        let above = Int64(bitPattern: address) >> (width - 1)
        guard above == 0 || above == -1 else {
            throw TranslationFault(address: address, reason: "not a canonical \(width)-bit address (\(levels)-level paging)")
        }
        var table = root & X86_64.addressMask
        for level in (0..<levels).reversed() {  // level 4 = PML5 … 0 = PT
            let shift = UInt64(12 + 9 * level)
            let index = (address >> shift) & 0x1ff
            let e = try entry(table + index * 8)
            let name = X86_64.levelNames[5 - 1 - level]
            guard e & X86_64.present != 0 else {
                throw TranslationFault(address: address, reason: "not mapped (\(name) entry not present)")
            }
            if level == 0 || (level <= 2 && e & X86_64.pageSizeBit != 0) {
                let pageMask = (UInt64(1) << shift) - 1
                return (e & X86_64.addressMask & ~pageMask) | (address & pageMask)
            }
            table = e & X86_64.addressMask
        }
        throw TranslationFault(address: address, reason: "no page-table levels")
    }
}

extension Arch {
    /// The architecture's page-table walker, nil when kreach can't walk its page tables.
    public var pageTables: (any PageTableWalker)? { definition as? any PageTableWalker }
    /// The kernel image's virtual base: kernel-image virtual − this + phys_base = physical
    /// (x86-64 __START_KERNEL_map).
    public var kernelImageBase: UInt64? { definition is X86_64 ? 0xffff_ffff_8000_0000 : nil }
}
