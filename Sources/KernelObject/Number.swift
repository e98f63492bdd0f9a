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

/// An expression resolved once, memory-free (symbols, types, member offsets; pointers stay symbolic loads),
/// for reading again and again: each `number(_:)` only reads memory. Valid while the symbols it resolved
/// stay where they are (an exporter resolves again when the module list changes).
public struct CompiledExpression {
    public let source: String
    let resolved: Resolved
}

extension Evaluator {
    /// `source` resolved without memory; nil for a container walk (walks read as they go).
    public func compile(_ source: String) throws -> CompiledExpression? {
        let expr = try ExpressionParser.parse(source, isTypeName: { [weak self] in self?.isTypeName($0) ?? false })
        if case .container = expr { return nil }
        defer { resolver.clearWarnings() }
        return CompiledExpression(source: source, resolved: try resolver.resolve(expr, source))
    }

    /// The value of a compiled scalar expression now.
    public func number(_ compiled: CompiledExpression) throws -> ScalarNumber {
        try object(compiled.resolved).number(memory)
    }

    /// The object a compiled expression designates now, its pointers followed (its `address` tells an
    /// exporter which module's memory holds the value).
    public func object(_ compiled: CompiledExpression) throws -> Object {
        try object(compiled.resolved)
    }
}
