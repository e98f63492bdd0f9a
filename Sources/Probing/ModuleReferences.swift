import Arch
import KernelSymbols

/// The functions of a module's .ko whose code references one of its data objects, from the relocations
/// of its text sections, decoded for the .ko's architecture (`Arch`, from its ELF `e_machine`).
public enum ModuleReferences {
    /// A referencing function: its text section and every site (`func+0xoff`) in relocation order.
    public struct Function: Equatable, Sendable {
        public let name: String
        public let section: String
        public let sites: [String]
    }

    /// One entry per function, in the order first seen; `module_init()`/`module_exit()` aliases
    /// (init_module, cleanup_module) give way to the real name. A relocation against the object's own
    /// symbol always counts; one against its section symbol counts when the address it refers to
    /// (`Arch.referencedAddress`: for a PC-relative field, from the instruction's end) falls inside the object.
    public static func functions(referencing targetIndex: Int, in elf: ELFFile, symbols: [ELFFile.Symbol],
                                 source: String) throws(ArchError) -> [Function] {
        guard symbols.indices.contains(targetIndex) else { return [] }
        let arch = try Arch(elfMachine: elf.machine, source: source)
        let target = symbols[targetIndex]
        let range = target.value..<(target.value + max(target.size, 1))
        var byFunction: [String: (section: String, sites: [String])] = [:]
        var order: [String] = []
        for (sectionIndex, section) in elf.sections.enumerated() where section.name.hasPrefix(".text") || section.name.hasPrefix(".init.text") || section.name.hasPrefix(".exit.text") {
            let code = Array(elf.contents(section))
            for r in elf.relocations(for: sectionIndex) where r.symbol < symbols.count {
                let s = symbols[r.symbol]
                var hit = r.symbol == targetIndex
                if !hit && s.type == 3 && s.section == target.section,  // section symbol + addend
                   let relocation = arch.relocation(r.type),
                   let address = arch.referencedAddress(relocation, symbolValue: s.value, addend: r.addend,
                                                        code: code, field: Int(clamping: r.offset)) {
                    hit = range.contains(address)
                }
                guard hit else { continue }
                let containing = symbols.filter { $0.type == 2 && Int($0.section) == sectionIndex && r.offset >= $0.value && r.offset < $0.value + max($0.size, 1) }
                guard let fn = containing.first(where: { $0.name != "init_module" && $0.name != "cleanup_module" }) ?? containing.first else { continue }
                let site = "\(fn.name)+0x\(String(r.offset - fn.value, radix: 16))"
                if byFunction[fn.name] == nil { order.append(fn.name); byFunction[fn.name] = (section.name, []) }
                if byFunction[fn.name]?.sites.contains(site) == false { byFunction[fn.name]?.sites.append(site) }
            }
        }
        return order.compactMap { name in byFunction[name].map { Function(name: name, section: $0.section, sites: $0.sites) } }
    }
}
