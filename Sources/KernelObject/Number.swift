import Memory

/// A scalar's value as a number, with its signedness (for exporters that need the typed value, not text).
public enum ScalarNumber: Equatable, Sendable {
    case unsigned(UInt64)
    case signed(Int64)

    /// Decimal text, exact for every 64-bit value.
    public var text: String {
        switch self {
        case .unsigned(let v): return String(v)
        case .signed(let v): return String(v)
        }
    }
}

extension Object {
    /// The value of a scalar object (integer, enum, bool, pointer) read through `memory`; an error for
    /// structs, unions, arrays and untyped memory.
    public func number(_ memory: KernelMemory) throws -> ScalarNumber {
        guard type.isScalar else { throw ExpressionError.plain("\(type.name) is not a number; name a scalar member") }
        let v = try scalar(memory)
        let signed = (try? type.record()).flatMap { $0 }.map { $0.1.isSigned } ?? false
        return signed ? .signed(Int64(bitPattern: v)) : .unsigned(v)
    }
}
