/// A malformed or unexpected BTF input, with the object and byte offset where it was found.
public struct BTFError: Error, CustomStringConvertible, Equatable, Sendable {
    public let object: String
    public let message: String
    /// Byte offset in the BTF file, when the problem is at one place.
    public let offset: Int?

    public init(_ object: String, _ message: String, offset: Int? = nil) {
        self.object = object
        self.message = message
        self.offset = offset
    }

    public var description: String {
        if let offset { return "BTF \(object): \(message) at byte offset \(offset)" }
        return "BTF \(object): \(message)"
    }
}
