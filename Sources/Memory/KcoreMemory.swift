import Glibc
import KernelSymbols
import KreachSupport

/// Kernel memory through /proc/kcore: an ELF core file whose PT_LOAD segments map kernel virtual
/// addresses to file offsets. Read-only (opened O_RDONLY, read with pread).
public final class KcoreMemory: KernelMemory {
    public let name = "kcore"
    let fd: Int32
    let segments: [ELFFile.Segment]

    public init(path: String = "/proc/kcore") throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open", path, errno: errno) }
        self.fd = fd
        // The ELF and program headers sit at the start; 1 MiB covers thousands of segments.
        var head = [UInt8](repeating: 0, count: 1 << 20)
        let n = head.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else {
            let e = errno
            close(fd)
            throw SystemError("read", path, errno: e)
        }
        head.removeSubrange(n...)
        do {
            // Only program headers are needed; section headers are absent in kcore.
            segments = try ELFFile(bytes: head, source: path).segments.filter { $0.type == 1 }
        } catch {
            close(fd)
            throw error
        }
    }

    deinit { close(fd) }

    public func read(_ address: UInt64, count: Int) throws -> [UInt8] {
        guard count > 0 else { return [] }
        guard let s = segments.first(where: { address >= $0.vaddr && address - $0.vaddr < $0.fileSize }),
              UInt64(count) <= s.fileSize - (address - s.vaddr) else {
            throw MemoryFault(address: address, count: count, reason: "not mapped (outside every /proc/kcore segment)")
        }
        var out = [UInt8](repeating: 0, count: count)
        let offset = off_t(Int64(bitPattern: s.offset + (address - s.vaddr)))
        let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress, count, offset) }
        guard n == count else {
            throw MemoryFault(address: address, count: count, reason: n < 0 ? "not mapped (/proc/kcore: \(String(cString: strerror(errno))))" : "short read from /proc/kcore")
        }
        return out
    }

    public func currentTask() throws -> UInt64 {
        throw MemoryError.noCurrentTask(reader: "/proc/kcore")
    }
}
