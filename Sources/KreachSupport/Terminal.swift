/// Text from input (kernel files, captures, arguments, scripts) made safe to echo on a terminal.
///
/// Control characters (C0 such as NUL, BEL, CR, ESC; DEL; C1 such as CSI U+009B) become `\xNN` (`\r`, `\e`… are
/// not special-cased: one form for all). Invalid UTF-8 never reaches here raw: kreach decodes input bytes with
/// `String(decoding:as:)`, which turns them into U+FFFD, so they print as `�`.
public enum Terminal {
    /// `text` with its control characters escaped; `layout` keeps newlines and tabs (for multi-line output).
    public static func escaped(_ text: String, layout: Bool = true) -> String {
        // Bytes first (cheaper than scalars): a control character is a byte below 0x20, DEL, or 0xC2 0x80-0x9F.
        guard text.utf8.contains(where: { ($0 < 0x20 && !(layout && ($0 == 10 || $0 == 9))) || $0 == 0x7F || $0 == 0xC2 }),
              text.unicodeScalars.contains(where: { isControl($0, layout: layout) }) else { return text }
        var out = ""
        out.reserveCapacity(text.utf8.count + 16)
        for s in text.unicodeScalars {
            if isControl(s, layout: layout) {
                out += "\\x" + (s.value < 16 ? "0" : "") + String(s.value, radix: 16)
            } else {
                out.unicodeScalars.append(s)
            }
        }
        return out
    }

    static func isControl(_ s: Unicode.Scalar, layout: Bool) -> Bool {
        if layout && (s == "\n" || s == "\t") { return false }
        return s.value < 0x20 || (s.value >= 0x7f && s.value < 0xa0)
    }

    /// Widest excerpt of a source line `caretLines` shows: longer lines are cut around the caret.
    public static let excerptWidth = 100

    /// Two lines for an error: the source (escaped, cut to `excerptWidth` characters around `range` with `…`)
    /// and a caret line `^~~~` under `range` (character offsets into `source`).
    public static func caretLines(_ source: [Character], _ range: Range<Int>) -> (source: String, caret: String) {
        let lower = min(max(0, range.lowerBound), source.count)
        let upper = min(max(lower, range.upperBound), source.count)
        var start = 0, end = source.count
        if source.count > excerptWidth {
            start = max(0, min(lower - 20, source.count - excerptWidth))
            end = start + excerptWidth
        }
        var line = start > 0 ? "…" : ""
        var pad = start > 0 ? " " : "", width = 0
        for i in start..<end {
            // A tab stays a tab, in the caret line too, so the caret lines up whatever the tab width.
            let shown = source[i] == "\t" ? "\t" : escaped(String(source[i]), layout: false)
            if i < lower { pad += shown == "\t" ? "\t" : String(repeating: " ", count: shown.count) } else if i < upper { width += shown.count }
            line += shown
        }
        if end < source.count { line += "…" }
        let caret = pad + "^" + String(repeating: "~", count: max(1, width) - 1)
        return (line, caret)
    }
}
