/// Shell-style glob matching on bytes: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`; everything else literal.
///
/// Iterative with one backtrack point for `*`, so matching is O(pattern × text) and never recursive.
public struct Glob: Sendable {
    public let pattern: [UInt8]

    public init(_ pattern: String) { self.pattern = Array(pattern.utf8) }

    /// True when the pattern contains a glob metacharacter.
    public static func isPattern(_ s: String) -> Bool {
        s.utf8.contains { $0 == UInt8(ascii: "*") || $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "[") }
    }

    public func matches(_ text: String) -> Bool {
        var t = text
        return t.withUTF8 { matches(UnsafeBufferPointer(start: $0.baseAddress, count: $0.count)) }
    }

    public func matches(_ text: UnsafeBufferPointer<UInt8>) -> Bool {
        let p = pattern
        var pi = 0, ti = 0
        var starP = -1, starT = 0
        while ti < text.count {
            if pi < p.count {
                let c = p[pi]
                if c == UInt8(ascii: "*") {
                    starP = pi; starT = ti; pi += 1
                    continue
                }
                if c == UInt8(ascii: "?") {
                    pi += 1; ti += 1
                    continue
                }
                if c == UInt8(ascii: "["), let (matched, next) = matchClass(p, pi + 1, text[ti]) {
                    if matched { pi = next; ti += 1; continue }
                } else if c == text[ti] {
                    pi += 1; ti += 1
                    continue
                }
            }
            if starP >= 0 {
                pi = starP + 1
                starT += 1
                ti = starT
                continue
            }
            return false
        }
        while pi < p.count && p[pi] == UInt8(ascii: "*") { pi += 1 }
        return pi == p.count
    }

    /// Matches `ch` against the class starting after `[`; nil when the class is unterminated (then `[` is literal).
    private func matchClass(_ p: [UInt8], _ start: Int, _ ch: UInt8) -> (Bool, Int)? {
        var i = start
        var negate = false
        if i < p.count && (p[i] == UInt8(ascii: "!") || p[i] == UInt8(ascii: "^")) { negate = true; i += 1 }
        var matched = false
        var first = true
        while i < p.count {
            let c = p[i]
            if c == UInt8(ascii: "]") && !first { return (matched != negate, i + 1) }
            first = false
            if i + 2 < p.count && p[i + 1] == UInt8(ascii: "-") && p[i + 2] != UInt8(ascii: "]") {
                if ch >= c && ch <= p[i + 2] { matched = true }
                i += 3
            } else {
                if ch == c { matched = true }
                i += 1
            }
        }
        return nil
    }
}
