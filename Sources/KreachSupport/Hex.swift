/// Hexadecimal formatting and parsing for kernel addresses.
public enum Hex {
    /// 16-digit lower-case address, as /proc/kallsyms prints it.
    public static func address(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, 16 - digits.count)) + digits
    }

    /// `0x1f` style.
    public static func short(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }

    /// Bytes as lower-case hex digits, two per byte (a build-id).
    public static func string(_ bytes: [UInt8]) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }

    /// The bytes of an even number of hex digits (a build-id); nil if not that.
    public static func bytes(_ text: String) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard !digits.isEmpty, digits.count % 2 == 0, digits.count <= 512 else { return nil }
        var out: [UInt8] = []
        for k in stride(from: 0, to: digits.count, by: 2) {
            guard let b = UInt8(String(decoding: digits[k..<(k + 2)], as: UTF8.self), radix: 16) else { return nil }
            out.append(b)
        }
        return out
    }

    /// Parses `ffffffffc0571000`, `0xffffffffc0571000` (at most 16 hex digits); nil if not hex.
    public static func parse(_ text: Substring) -> UInt64? {
        var s = text
        if s.hasPrefix("0x") || s.hasPrefix("0X") { s = s.dropFirst(2) }
        guard !s.isEmpty, s.count <= 16 else { return nil }
        return UInt64(s, radix: 16)
    }
}
