import Arch
import KernelSymbols
import KreachSupport
import Memory

/// Finds vmlinux code that references an address range, by scanning kernel text read through the
/// memory reader with the architecture's text-reference decoding (`Arch.textReferences`: on x86-64 every
/// 4-byte window as a RIP-relative displacement and as an absolute imm32). It decodes no instructions,
/// so a hit is "these bytes point there".
public struct TextScanner {
    public typealias Hit = TextReference

    let memory: KernelMemory
    let arch: Arch

    public init(memory: KernelMemory, arch: Arch) {
        self.memory = memory
        self.arch = arch
    }

    public func references(to range: Range<UInt64>, text: Range<UInt64>, chunk: Int = 1 << 20) throws -> [Hit] {
        var hits: [Hit] = []
        let overlap = arch.textReferenceWidth - 1
        var start = text.lowerBound
        while start < text.upperBound {
            let n = Int(min(UInt64(chunk + overlap), text.upperBound - start))
            guard n > overlap else { break }
            let bytes = try memory.read(start, count: n)
            bytes.withUnsafeBytes { raw in arch.textReferences(in: raw, at: start, to: range) { hits.append($0) } }
            start += UInt64(min(chunk, n))
        }
        return hits
    }
}
