import Memory
import KernelSymbols
import KreachSupport

/// Finds vmlinux code that references an address range, by scanning kernel text read through the
/// memory reader: every 4-byte window is taken as an x86-64 RIP-relative displacement (target = window
/// end + disp32, the common case with no immediate after it) and as a sign-extended absolute imm32.
/// It decodes no instructions, so a hit is "these bytes point there"; with a range of a few bytes the
/// chance of a random match over ~20 MB of text is small (about 0.1 expected per 8-byte target).
public struct TextScanner {
    public struct Hit { public let address: UInt64; public let kind: String }

    let memory: KernelMemory

    public init(memory: KernelMemory) { self.memory = memory }

    public func references(to range: Range<UInt64>, text: Range<UInt64>, chunk: Int = 1 << 20) throws -> [Hit] {
        var hits: [Hit] = []
        var start = text.lowerBound
        while start < text.upperBound {
            let n = Int(min(UInt64(chunk) + 3, text.upperBound - start))
            guard n >= 4 else { break }
            let bytes = try memory.read(start, count: n)
            bytes.withUnsafeBytes { raw in
                guard let p = raw.baseAddress else { return }
                for i in 0...(n - 4) {
                    let disp = Int64(Int32(littleEndian: p.loadUnaligned(fromByteOffset: i, as: Int32.self)))
                    let site = start &+ UInt64(i)
                    let rip = UInt64(bitPattern: Int64(bitPattern: site &+ 4) &+ disp)
                    if range.contains(rip) { hits.append(Hit(address: site, kind: "rip-relative")) }
                    let absolute = UInt64(bitPattern: disp)  // sign-extended imm32
                    if range.contains(absolute) { hits.append(Hit(address: site, kind: "absolute")) }
                }
            }
            start += UInt64(min(chunk, n))
        }
        return hits
    }
}
