import XCTest
@testable import KernelObject

/// Nesting is bounded: the parser, the evaluator and the release of the tree recurse once per level, so
/// every shape of deep nesting is refused with one error (and a caret) instead of overflowing the stack.
final class DepthTests: XCTestCase {
    let limit = ExpressionParser.maxDepth

    func parse(_ s: String) throws -> Expr {
        try ExpressionParser.parse(s, isTypeName: { $0 == "u64" })
    }

    func assertTooDeep(_ source: String, _ what: String, line: UInt = #line) {
        XCTAssertThrowsError(try parse(source), what, line: line) { error in
            guard let e = error as? ExpressionError, case let .at(message, _, range) = e else {
                return XCTFail("\(what): not a caret error: \(error)", line: line)
            }
            XCTAssertTrue(message.hasSuffix("nested deeper than \(limit) levels"), "\(what): \(message)", line: line)
            XCTAssertFalse(range.isEmpty, line: line)
            // One message line, the (cut) source line and the caret: never 3 KB of expression.
            let lines = e.description.split(separator: "\n")
            XCTAssertEqual(lines.count, 3, line: line)
            XCTAssertLessThan(lines.map(\.count).max() ?? 0, 120, line: line)
        }
    }

    func repeated(_ s: String, _ n: Int) -> String { String(repeating: s, count: n) }

    func testEveryShapeOfDeepNestingIsRefused() {
        assertTooDeep(repeated("*", 3000) + "current", "stars")
        assertTooDeep("current" + repeated("->real_parent", 3000), "member chain")
        assertTooDeep(repeated("(", 10_000) + "1" + repeated(")", 10_000), "parentheses")
        assertTooDeep(repeated("(int)", 3000) + "1", "casts")
        assertTooDeep("x" + repeated("[0]", 3000), "indexes")
        assertTooDeep(repeated("&", 300) + "x", "address-of")
        assertTooDeep(repeated("-", 300) + "1", "negation")
        assertTooDeep("x[" + repeated("x[", 300) + "0" + repeated("]", 300) + "]", "nested index expressions")
        assertTooDeep(repeated("per_cpu(", 300) + "x" + repeated(", 0)", 300), "per_cpu arguments")
    }

    /// Depth is the tree's, not the parser's recursion: 20 parenthesized groups of 20 links each are 400 levels
    /// although the parser never recurses more than 20 deep.
    func testDepthIsTheTreesNotTheParsersRecursion() {
        var s = "x"
        for _ in 0..<20 { s = "(" + s + repeated(".a", 20) + ")" }
        assertTooDeep(s, "groups of member links")
    }

    func testPointerStarsInATypeAreBounded() {
        XCTAssertThrowsError(try parse("(int " + repeated("*", 3000) + ")1")) { error in
            XCTAssertTrue("\(error)".hasPrefix("type expression nested deeper than \(limit) levels"), "\(error)")
        }
        XCTAssertNoThrow(try parse("(int " + repeated("*", limit) + ")1"))
    }

    /// The limit is the documented number, and everything up to it parses.
    func testUpToTheLimitParses() throws {
        XCTAssertEqual(limit, 256)
        XCTAssertNoThrow(try parse(repeated("*", limit - 1) + "current"))
        assertTooDeep(repeated("*", limit) + "current", "one level over")
        XCTAssertNoThrow(try parse("current" + repeated("->real_parent", limit - 1)))
        XCTAssertNoThrow(try parse(repeated("(", limit - 1) + "1" + repeated(")", limit - 1)))
        XCTAssertNoThrow(try parse(repeated("(u64)", limit - 1) + "1"))
    }

    /// `--depth` can't make the formatter recurse past the same bound.
    func testFormatterDepthIsClamped() {
        var options = FormatOptions()
        options.depth = 1_000_000
        XCTAssertEqual(options.depth, limit)
        options.depth = 3
        XCTAssertEqual(options.depth, 3)
    }
}
