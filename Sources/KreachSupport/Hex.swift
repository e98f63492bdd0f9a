/// Hexadecimal formatting and parsing for kernel addresses.
public enum Hex {
    /// 16-digit lower-case address, as /proc/kallsyms prints it.
    public static func address(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, 16 - digits.count)) + digits
    }

    /// `0x1f` style.
    public static func short(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }

    /// Parses `ffffffffc0571000`, `0xffffffffc0571000` (at most 16 hex digits); nil if not hex.
    public static func parse(_ text: Substring) -> UInt64? {
        var s = text
        if s.hasPrefix("0x") || s.hasPrefix("0X") { s = s.dropFirst(2) }
        guard !s.isEmpty, s.count <= 16 else { return nil }
        return UInt64(s, radix: 16)
    }
}
