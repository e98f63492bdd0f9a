import CKreach
import KreachSupport

/// Finding the kallsyms tables in a kernel image that doesn't say where they are (VMCOREINFO without
/// SYMBOL(kallsyms_*): kernels before 6.0). scripts/kallsyms.c of those kernels emits, in .rodata and in this
/// order: kallsyms_offsets (u32 each), kallsyms_relative_base (8), kallsyms_num_syms (u32, 8-aligned),
/// kallsyms_names, kallsyms_markers, kallsyms_seqs_of_names (6.2 and backports, as Debian's 6.1),
/// kallsyms_token_table (256 NUL-terminated tokens), kallsyms_token_index (256 u16). The anchor is the token
/// table: byte codes the names use as themselves keep a one-character token, so '0'…'9' are the ten
/// consecutive tokens "0\0"…"9\0". The index must match the table, and a candidate base/count must decode to
/// a table whose _stext is VMCOREINFO's _stext.
extension InMemoryKallsyms.Tables {
    /// At most this much of the image (from _stext) is searched for the token table.
    static let searchLimit: UInt64 = 96 << 20

    /// The tables found by searching the image from `text` (VMCOREINFO's _stext) through `memory`.
    public static func search(memory: any KernelMemory, text: UInt64) throws -> InMemoryKallsyms.Tables {
        let digits = Array("0\u{0}1\u{0}2\u{0}3\u{0}4\u{0}5\u{0}6\u{0}7\u{0}8\u{0}9\u{0}".utf8)
        let chunk: UInt64 = 1 << 20
        var at = text
        var tokenTables: [UInt64] = []
        while at - text < searchLimit {
            // Chunks overlap by the signature's length. Pages the kernel unmapped (x86-64 frees the gaps
            // between .text and .rodata, and .rodata and .data) are stepped over a page at a time.
            guard let bytes = try? memory.read(at, count: Int(chunk)) else {
                at += 4096
                continue
            }
            var from = 0
            while from < bytes.count, let hit = bytes.withUnsafeBytes({ b in
                digits.withUnsafeBytes { d in kreach_memmem(b.baseAddress! + from, b.count - from, d.baseAddress, d.count) }
            }) {
                let offset = bytes.withUnsafeBytes { hit - UnsafeRawPointer($0.baseAddress!) }
                if let tables = try? tablesAround(zero: at + UInt64(offset), memory: memory, text: text, tokenTables: &tokenTables) { return tables }
                from = offset + 1
            }
            at += chunk - UInt64(digits.count)
        }
        if let table = tokenTables.first {
            throw MemoryError.unavailable("kallsyms: a token table at \(Hex.short(table)), but no kallsyms_relative_base and kallsyms_num_syms below it that decode _stext (the tables are not in the order of kernels before 6.0)")
        }
        throw MemoryError.unavailable("kallsyms: no token table (\"0\", \"1\" … \"9\" as consecutive tokens) in the \(searchLimit >> 20) MiB from _stext \(Hex.short(text))")
    }

    /// The tables if `zero` is token "0" of a token table followed by its index, else nil.
    /// A token table with a matching index is added to `tokenTables` when no tables are found below it.
    static func tablesAround(zero: UInt64, memory: any KernelMemory, text: UInt64, tokenTables: inout [UInt64]) throws -> InMemoryKallsyms.Tables? {
        // Tokens '0' (48) … 255 from `zero`: the table's end, then the index (2-, 4- or 8-aligned).
        let after = try memory.read(zero, count: 8192)
        var end = 0
        for _ in 48..<256 {
            guard let nul = after[end...].firstIndex(of: 0) else { return nil }
            end = nul + 1
        }
        let tableEnd = zero + UInt64(end)
        var found: (table: UInt64, index: UInt64)?
        for align in [UInt64(2), 4, 8] {
            let candidate = (tableEnd + align - 1) & ~(align - 1)
            let raw = try memory.read(candidate, count: 512)
            let index = (0..<256).map { UInt64(raw.le(2 * $0, as: UInt16.self)) }
            guard index[0] == 0, index[48] <= zero, zip(index, index.dropFirst()).allSatisfy({ $0 < $1 }) else { continue }
            let table = zero - index[48]
            guard (48..<58).allSatisfy({ index[$0 + 1] - index[$0] == 2 }), table + index[255] < tableEnd else { continue }
            found = (table, candidate)
            break
        }
        guard let (table, index) = found else { return nil }
        tokenTables.append(table)
        // Below the table (past kallsyms_markers and, since 6.2 and its backports, kallsyms_seqs_of_names):
        // kallsyms_relative_base, 8-aligned, holding an address at or below _stext (the lowest symbol's),
        // then kallsyms_num_syms, then the names; kallsyms_offsets ends right below the base.
        let chunk = 1 << 20
        var top = table & ~7
        while table - top < 16 << 20, top - text >= UInt64(chunk) {
            guard let bytes = try? memory.read(top - UInt64(chunk), count: chunk) else { break }
            for o in stride(from: chunk - 16, through: 0, by: -8) {
                let base = bytes.le(o, as: UInt64.self)
                guard base <= text, text - base < 16 << 20 else { continue }
                let n = UInt64(bytes.le(o + 8, as: UInt32.self))
                guard n >= 256, n <= UInt64(InMemoryKallsyms.maxSymbols) else { continue }
                let variable = top - UInt64(chunk) + UInt64(o)
                let tables = InMemoryKallsyms.Tables(names: variable + 16, numSyms: variable + 8, tokenTable: table, tokenIndex: index,
                                                      offsets: (variable &- 4 * n) & ~7, relativeBase: variable, text: text)
                // Only tables that decode _stext to VMCOREINFO's _stext.
                if let decoded = try? InMemoryKallsyms(memory: memory, tables: tables),
                   decoded.symbols.contains(where: { $0.name == "_stext" && $0.address == text }) { return tables }
            }
            top -= UInt64(chunk - 16)
        }
        return nil
    }
}
