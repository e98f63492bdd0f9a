import KreachSupport

/// Reads kernel memory. Implementations never write it.
public protocol KernelMemory: AnyObject {
    /// `count` bytes at `address`; an unmapped or faulting address is an error naming it.
    func read(_ address: UInt64, count: Int) throws -> [UInt8]
    /// The `struct task_struct *` of the task running kreach.
    func currentTask() throws -> UInt64
    /// A short name for messages ("bpf", "kcore").
    var name: String { get }
    /// `count` bytes at each of `addresses`, in order; nil where a read faulted (`read(_:count:)` says why).
    /// Readers that can do many reads at once (BPF: one program run per batch) do; the default reads each.
    func read(many addresses: [UInt64], count: Int) throws -> [[UInt8]?]
}

extension KernelMemory {
    public func read(many addresses: [UInt64], count: Int) throws -> [[UInt8]?] {
        addresses.map { try? read($0, count: count) }
    }
}

/// A read of kernel memory that faulted.
public struct MemoryFault: Error, CustomStringConvertible, Sendable {
    public let address: UInt64
    public let count: Int
    public let reason: String
    public init(address: UInt64, count: Int, reason: String) {
        self.address = address
        self.count = count
        self.reason = reason
    }
    public var description: String {
        "can't read \(count) byte\(count == 1 ? "" : "s") at \(Hex.short(address)): \(reason)"
    }
}

/// A memory reader that can't answer at all (as opposed to one address faulting: `MemoryFault`).
public enum MemoryError: Error, CustomStringConvertible {
    /// No kernel memory here (a snapshot, not root): the reason.
    case unavailable(String)
    /// `current` asked of a reader that can't tell which task runs (/proc/kcore).
    case noCurrentTask(reader: String)
    /// `current` in a dump: no task runs kreach there. The text offers each CPU's task.
    case noCurrentInDump(String)
    /// `auto`: neither BPF nor /proc/kcore could be opened.
    case noReader(bpf: any Error, kcore: any Error)

    public var description: String {
        switch self {
        case .unavailable(let reason): return reason
        case .noCurrentTask(let reader):
            return "current needs the BPF reader (--memory bpf): \(reader) can't tell which task is running"
        case .noCurrentInDump(let cpus):
            return "current has no meaning in a dump (no task of it runs kreach)" + (cpus.isEmpty ? "" : "; the task each CPU ran: " + cpus)
        case let .noReader(bpf, kcore): return "can't read kernel memory: BPF: \(bpf); /proc/kcore: \(kcore)"
        }
    }
}
