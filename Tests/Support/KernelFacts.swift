import Arch
import Foundation
import Glibc

/// Facts about the running kernel, decided from the kernel's own files (feature detection, never versions).
public enum KernelFacts {
    /// The vmlinux line of /proc/kallsyms ("ADDR T name", no [module]) naming `name` with one of `letters`,
    /// found by grep (fast even under TCG, and independent of kreach's parser); needs root for real addresses.
    public static func vmlinuxSymbol(_ name: String, letters: String) throws -> (address: UInt64, letter: Character)? {
        let r = try Run.command(["grep", "-m1", "-E", "^[0-9a-f]+ [\(letters)] \(name)$", "/proc/kallsyms"])
        let f = r.stdout.split(separator: " ")
        guard r.status == 0, f.count == 3, let a = UInt64(f[0], radix: 16), let c = f[1].first else { return nil }
        return (a, c)
    }

    /// Whether vmlinux has a data symbol (d, b, r: initialised, zeroed or read-only data) with this name.
    /// Distribution kernels list data symbols (CONFIG_KALLSYMS_ALL); this dev host's kernel does not.
    public static func hasDataSymbol(_ name: String) throws -> Bool {
        try vmlinuxSymbol(name, letters: "dDbBrR") != nil
    }

    /// The address of a vmlinux data symbol, nil when kallsyms doesn't list it.
    public static func dataSymbol(_ name: String) throws -> UInt64? {
        try vmlinuxSymbol(name, letters: "dDbBrR")?.address
    }

    /// Whether the kernel runs 5-level page tables (x86-64 LA57): only then does an mmap hint above the
    /// 47-bit user space get an address there (arch/x86/mm/mmap.c); with 4-level paging it is ignored.
    public static var fiveLevelPaging: Bool {
        let hint = UnsafeMutableRawPointer(bitPattern: UInt(1) << 52)
        guard let p = mmap(hint, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else { return false }
        defer { munmap(p, 4096) }
        return UInt(bitPattern: p) >= UInt(1) << 47
    }

    /// The lowest canonical kernel address: sign extension of bit 47 (4-level) or bit 56 (5-level).
    public static var kernelHalfStart: UInt64 {
        Arch.x86_64.addressSpace.kernelStart(width: fiveLevelPaging ? 57 : 48)
    }
}
