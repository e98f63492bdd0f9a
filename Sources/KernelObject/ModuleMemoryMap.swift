import BTF
import KreachSupport
import Memory

/// Where a loaded module's memory lies, read from its `struct module` (include/linux/module.h): the
/// core memory kinds of `mem[]` (`struct module_memory` base and size for MOD_TEXT, MOD_DATA, MOD_RODATA and
/// MOD_RO_AFTER_INIT, each allocated apart since 6.4) or `core_layout` (one block before). /proc/modules
/// gives only the text's base and the core's total size, which on 6.4+ kernels does not cover the module's
/// data: `struct module` itself lives in MOD_DATA.
public struct ModuleMemoryMap {
    /// (base, size) offsets in `struct module` of each core region, and the width of each size field.
    let fields: [(base: UInt64, size: UInt64)]
    let sizeWidth: Int

    /// Core memory kinds of enum mod_mem_type (the init kinds are freed once the module is live).
    static let coreKinds = ["MOD_TEXT", "MOD_DATA", "MOD_RODATA", "MOD_RO_AFTER_INIT"]

    public init(vmlinux btf: BTF) throws {
        let layout = MemberOffsets(btf: btf)
        if let mem = try? layout.offset("module", "mem") {
            let element = try layout.size("module_memory")
            let base = try layout.offset("module_memory", "base"), size = try layout.offset("module_memory", "size")
            var fields: [(UInt64, UInt64)] = []
            for kind in Self.coreKinds {
                // A kind the kernel lacks (MOD_RO_AFTER_INIT came later than MOD_TEXT) is left out.
                guard let index = layout.enumerator(kind, of: "mod_mem_type"), index < 16 else { continue }
                fields.append((mem + index * element + base, mem + index * element + size))
            }
            guard !fields.isEmpty else { throw MemoryError.unavailable("vmlinux BTF has struct module.mem but no enum mod_mem_type") }
            self.fields = fields
        } else {
            var fields: [(UInt64, UInt64)] = []
            for member in ["core_layout", "data_layout"] {
                guard let at = try? layout.offset("module", member) else { continue }
                fields.append((at + (try layout.offset("module_layout", "base")), at + (try layout.offset("module_layout", "size"))))
            }
            guard !fields.isEmpty else { throw MemoryError.unavailable("vmlinux BTF's struct module has neither mem nor core_layout") }
            self.fields = fields
        }
        sizeWidth = 4  // unsigned int size in both struct module_memory and struct module_layout
    }

    /// The module's core memory regions (empty ones left out), its `struct module` at `module`.
    public func regions(module: UInt64, memory: KernelMemory) throws -> [Range<UInt64>] {
        let span = (fields.map { max($0.base + 8, $0.size + UInt64(sizeWidth)) }.max() ?? 0)
        let bytes = try memory.read(module, count: Int(span))
        var regions: [Range<UInt64>] = []
        for f in fields {
            let base = bytes.le64(Int(f.base)), size = UInt64(bytes.le32(Int(f.size)))
            let (end, overflow) = base.addingReportingOverflow(size)
            if size > 0, base != 0, !overflow { regions.append(base..<end) }
        }
        return regions
    }
}
