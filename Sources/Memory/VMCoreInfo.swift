import KreachSupport

/// The kernel's VMCOREINFO note (kernel/vmcore_info.c, arch/x86/kernel/machine_kexec_64.c): "KEY=VALUE"
/// lines the kernel writes for dump readers. Typed here; the raw lines are kept for anything else.
public struct VMCoreInfo: Sendable, Equatable {
    /// OSRELEASE: the kernel's `uname -r`.
    public let osRelease: String?
    /// BUILD-ID: vmlinux's GNU build-id, hex (kernels since 5.9).
    public let buildID: String?
    /// PAGESIZE.
    public let pageSize: Int?
    /// KERNELOFFSET: the KASLR offset of the kernel image (x86-64).
    public let kernelOffset: UInt64?
    /// SYMBOL(name)=hex: runtime (relocated) addresses.
    public let symbols: [String: UInt64]
    /// NUMBER(name)=decimal (phys_base, pgtable_l5_enabled…).
    public let numbers: [String: Int64]
    /// SIZE(type), OFFSET(type.member), LENGTH(array): decimal.
    public let sizes: [String: Int64]
    public let offsets: [String: Int64]
    public let lengths: [String: Int64]

    /// NUMBER(phys_base): where the kernel image was loaded physically.
    public var physBase: UInt64? { numbers["phys_base"].map { UInt64(bitPattern: $0) } }
    /// NUMBER(pgtable_l5_enabled)=1: 5-level paging. Absent (older kernels, 4-level only builds): false.
    public var fiveLevelPaging: Bool { numbers["pgtable_l5_enabled"] == 1 }

    /// Parses the note's text; a line that isn't KEY=VALUE, or a value that isn't a number where the key
    /// says one, is an error naming it.
    public init(text: String) throws(VMCoreError) {
        var symbols: [String: UInt64] = [:], numbers: [String: Int64] = [:]
        var sizes: [String: Int64] = [:], offsets: [String: Int64] = [:], lengths: [String: Int64] = [:]
        var plain: [String: String] = [:]
        for raw in text.split(separator: "\n", omittingEmptySubsequences: true) {
            let line = raw.hasSuffix("\0") ? raw.dropLast() : raw[...]
            if line.allSatisfy({ $0 == "\0" }) { continue }
            guard let eq = line.firstIndex(of: "=") else { throw .badVMCoreInfo(line: Terminal.escaped(String(line))) }
            let key = String(line[..<eq]), value = String(line[line.index(after: eq)...])
            func inner(_ prefix: String) -> String? {
                guard key.hasPrefix(prefix + "("), key.hasSuffix(")") else { return nil }
                return String(key.dropFirst(prefix.count + 1).dropLast())
            }
            // Decimal (%ld), or hex with 0x where the kernel prints it so (NUMBER(VMALLOC_START) since 6.x).
            func decimal() throws(VMCoreError) -> Int64 {
                if value.hasPrefix("0x"), let n = UInt64(value.dropFirst(2), radix: 16) { return Int64(bitPattern: n) }
                guard let n = Int64(value) else { throw .badVMCoreInfo(line: Terminal.escaped(String(line))) }
                return n
            }
            if let name = inner("SYMBOL") {
                guard let a = UInt64(value, radix: 16) else { throw .badVMCoreInfo(line: Terminal.escaped(String(line))) }
                symbols[name] = a
            } else if let name = inner("NUMBER") {
                numbers[name] = try decimal()
            } else if let name = inner("SIZE") {
                sizes[name] = try decimal()
            } else if let name = inner("OFFSET") {
                offsets[name] = try decimal()
            } else if let name = inner("LENGTH") {
                lengths[name] = try decimal()
            } else {
                plain[key] = value
            }
        }
        self.symbols = symbols
        self.numbers = numbers
        self.sizes = sizes
        self.offsets = offsets
        self.lengths = lengths
        osRelease = plain["OSRELEASE"]
        buildID = plain["BUILD-ID"]
        if let p = plain["PAGESIZE"] {
            guard let n = Int(p), n > 0, n & (n - 1) == 0 else { throw .badVMCoreInfo(line: "PAGESIZE=" + Terminal.escaped(p)) }
            pageSize = n
        } else { pageSize = nil }
        if let k = plain["KERNELOFFSET"] {
            guard let n = UInt64(k, radix: 16) else { throw .badVMCoreInfo(line: "KERNELOFFSET=" + Terminal.escaped(k)) }
            kernelOffset = n
        } else { kernelOffset = nil }
    }
}

/// A dump kreach can't use, or a part of one it needs that is missing. Each names the file.
public enum VMCoreError: Error, CustomStringConvertible, Equatable {
    /// Neither ELF, kdump-compressed nor makedumpfile's flattened format: the first bytes.
    case notADump(path: String, magic: String)
    /// The file ends before a structure it declares (`what`, at `offset`).
    case truncated(path: String, what: String, offset: UInt64)
    /// A header field out of range.
    case malformed(path: String, what: String)
    /// No VMCOREINFO note (qemu: `-device vmcoreinfo` and the guest's qemu_fw_cfg module).
    case noVMCoreInfo(path: String, hint: String)
    /// VMCOREINFO lacks an entry the reader needs.
    case missingVMCoreInfo(path: String, key: String)
    case badVMCoreInfo(line: String)
    /// The dump is of an architecture kreach can't walk page tables for.
    case unsupportedArch(path: String, arch: String)
    /// The dump's header names another architecture than the one kreach reads it as.
    case wrongArch(path: String, dump: String, expected: String)

    public var description: String {
        switch self {
        case let .notADump(path, magic):
            return "\(path): not a vmcore (ELF, kdump-compressed or flattened makedumpfile): it starts with \(magic)"
        case let .truncated(path, what, offset):
            return "\(path): truncated: \(what) at offset \(offset) is past the end of the file"
        case let .malformed(path, what): return "\(path): \(what)"
        case let .noVMCoreInfo(path, hint): return "\(path): the dump has no VMCOREINFO note (\(hint))"
        case let .missingVMCoreInfo(path, key): return "\(path): the dump's VMCOREINFO has no \(key)"
        case .badVMCoreInfo(let line): return "VMCOREINFO: can't parse the line \"\(line)\""
        case let .unsupportedArch(path, arch): return "\(path): can't walk \(arch) page tables"
        case let .wrongArch(path, dump, expected): return "\(path): a dump of \(dump), not \(expected)"
        }
    }
}
