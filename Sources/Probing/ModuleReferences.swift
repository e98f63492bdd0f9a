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

    /// A use of a global's address found in a module's relocations: what `where`'s pointer hint rests on.
    public enum AddressUse: Hashable, Sendable {
        /// A relocation in a data section: the address is stored at build time (a static initializer such as
        /// `.data = &g`, the `__param` table of a module parameter).
        case stored(section: String)
        /// An instruction in `function` at `site` that may put the address in a register or memory rather
        /// than read or write the object (`Arch.mayTakeAddress`: lea, an immediate, a GOT load).
        case taken(function: String, site: String)
    }

    /// What in a module's .ko refers to one data object of its symbol table.
    public struct GlobalReferences: Sendable {
        /// Functions whose code references the object, in first-seen order: text section and every site.
        public var functions: [Function] = []
        /// Where the object's address is stored or may be taken; empty when every use reads or writes it.
        public var addressUses: [AddressUse] = []
    }

    /// The functions of `elf` whose code references object `targetIndex` (see `references(to:in:symbols:source:)`).
    public static func functions(referencing targetIndex: Int, in elf: ELFFile, symbols: [ELFFile.Symbol],
                                 source: String) throws(ArchError) -> [Function] {
        try references(to: targetIndex, in: elf, symbols: symbols, source: source).functions
    }

    /// One entry per function, in the order first seen; `module_init()`/`module_exit()` aliases
    /// (init_module, cleanup_module) give way to the real name. A relocation against the object's own
    /// symbol always counts; one against its section symbol counts when the address it refers to
    /// (`Arch.referencedAddress`: for a PC-relative field, from the instruction's end) falls inside the object.
    /// Relocations in data sections (not debug info) are uses of the address: stored there.
    public static func references(to targetIndex: Int, in elf: ELFFile, symbols: [ELFFile.Symbol],
                                  source: String) throws(ArchError) -> GlobalReferences {
        var found = GlobalReferences()
        guard symbols.indices.contains(targetIndex) else { return found }
        let arch = try Arch(elfMachine: elf.machine, source: source)
        let target = symbols[targetIndex]
        let range = target.value..<(target.value + max(target.size, 1))
        var byFunction: [String: (section: String, sites: [String])] = [:]
        var order: [String] = []
        for (sectionIndex, section) in elf.sections.enumerated() where !section.name.hasPrefix(".debug") {
            let isText = section.name.hasPrefix(".text") || section.name.hasPrefix(".init.text") || section.name.hasPrefix(".exit.text")
            let relocations = elf.relocations(for: sectionIndex)
            guard !relocations.isEmpty else { continue }
            let contents = elf.contents(section)
            let code = isText ? Array(contents) : []
            for r in relocations where r.symbol < symbols.count {
                let s = symbols[r.symbol]
                var hit = r.symbol == targetIndex
                if !hit && s.type == 3 && s.section == target.section,  // section symbol + addend
                   let relocation = arch.relocation(r.type),
                   let address = arch.referencedAddress(relocation, symbolValue: s.value, addend: r.addend,
                                                        code: code, field: Int(clamping: r.offset)) {
                    hit = range.contains(address)
                }
                guard hit else { continue }
                guard isText else {
                    if !found.addressUses.contains(.stored(section: section.name)) { found.addressUses.append(.stored(section: section.name)) }
                    continue
                }
                let containing = symbols.filter { $0.type == 2 && Int($0.section) == sectionIndex && r.offset >= $0.value && r.offset < $0.value + max($0.size, 1) }
                guard let fn = containing.first(where: { $0.name != "init_module" && $0.name != "cleanup_module" }) ?? containing.first else { continue }
                let site = "\(fn.name)+0x\(String(r.offset - fn.value, radix: 16))"
                if byFunction[fn.name] == nil { order.append(fn.name); byFunction[fn.name] = (section.name, []) }
                if byFunction[fn.name]?.sites.contains(site) == false { byFunction[fn.name]?.sites.append(site) }
                if let relocation = arch.relocation(r.type), arch.mayTakeAddress(relocation, code: contents, field: Int(clamping: r.offset)) {
                    found.addressUses.append(.taken(function: fn.name, site: site))
                } else if arch.relocation(r.type) == nil {
                    found.addressUses.append(.taken(function: fn.name, site: site))
                }
            }
        }
        found.functions = order.compactMap { name in byFunction[name].map { Function(name: name, section: $0.section, sites: $0.sites) } }
        return found
    }
}
