/// The kernel image's sections as its own linker symbols bound them (include/asm-generic/vmlinux.lds.h,
/// arch/x86/kernel/vmlinux.lds.S), which /proc/kallsyms lists: `_stext`/`_etext`, `_sinittext`/`_einittext`,
/// `_sdata`/`_edata`, `__start_rodata`/`__end_rodata`, `__bss_start`/`__bss_stop`. (The init region is left
/// alone: besides `.init.text` it holds `.exit.text` and alternatives, text outside `_sinittext`…`_einittext`.)
///
/// The type letter alone is not enough to tell a function from a variable: 7.2's kallsyms prints `T` for
/// data such as `init_task` and `init_uts_ns`. The address decides instead.
struct SectionBounds {
    /// A data section's range and the letter nm gives its symbols (lower case).
    private var data: [(range: Range<UInt64>, letter: UInt8)] = []
    private var text: [Range<UInt64>] = []

    /// Bounds from the vmlinux symbols `address(name)` finds (nil when kallsyms doesn't list the name).
    init(address: (String) -> UInt64?) {
        func range(_ start: String, _ end: String) -> Range<UInt64>? {
            guard let s = address(start), let e = address(end), s != 0, s < e else { return nil }
            return s..<e
        }
        text = [range("_stext", "_etext"), range("_sinittext", "_einittext")].compactMap { $0 }
        let sections: [(String, String, Character)] = [
            ("_sdata", "_edata", "d"), ("__start_rodata", "__end_rodata", "r"),
            ("__bss_start", "__bss_stop", "b"),
        ]
        for (start, end, letter) in sections {
            if let r = range(start, end), let l = letter.asciiValue { data.append((r, l)) }
        }
    }

    /// The letter a vmlinux symbol gets: a text letter (`t`/`T`) at an address outside the text sections and
    /// inside a data section becomes that section's letter (same case); every other letter is kept.
    func letter(_ letter: UInt8, at address: UInt64) -> UInt8 {
        guard letter == UInt8(ascii: "t") || letter == UInt8(ascii: "T"), !text.contains(where: { $0.contains(address) }),
              let section = data.first(where: { $0.range.contains(address) }) else { return letter }
        return letter == UInt8(ascii: "T") ? section.letter - 32 : section.letter
    }
}

extension Kallsyms {
    /// The type letters with vmlinux's text letters checked against the section bounds (see `SectionBounds`).
    func lettersCheckedAgainstSections() -> [UInt8] {
        let bounds = SectionBounds { name in indexes(named: name, module: "vmlinux").first.map(address) }
        var checked = letters
        for k in 0..<count where moduleIndexes[k] == 0 {
            checked[k] = bounds.letter(letters[k], at: addresses[k])
        }
        return checked
    }
}
