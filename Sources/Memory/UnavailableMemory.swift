/// No memory to read (a snapshot): every read is an error saying so.
public final class UnavailableMemory: KernelMemory {
    public let name = "none"
    let reason: String
    public init(reason: String) { self.reason = reason }
    public func read(_ address: UInt64, count: Int) throws -> [UInt8] { throw MemoryError.unavailable(reason) }
    public func currentTask() throws -> UInt64 { throw MemoryError.unavailable(reason) }
}
