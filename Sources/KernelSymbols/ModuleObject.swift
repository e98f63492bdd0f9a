/// A loaded module seen through its .ko file: symbols placed at their load addresses
/// (the section's base from /sys/module/<m>/sections plus st_value — how the kernel builds the
/// module's kallsyms lines), and parameter types read from the relocations of its __param table.
///
/// Only built when the .ko's GNU build-id equals the loaded module's (/sys/module/<m>/notes), so the
/// file on disk is the code that is running.
public struct ModuleObject {
    public let module: String
    public let elf: ELFFile
    public let symbols: [ELFFile.Symbol]
    /// Loaded section addresses by section name.
    public let sectionBases: [String: UInt64]

    public init(module: String, elf: ELFFile, sectionBases: [String: UInt64]) throws(ELFError) {
        self.module = module
        self.elf = elf
        self.symbols = try elf.symbols()
        self.sectionBases = sectionBases
    }

    /// Data objects (STT_OBJECT) named `name`, with the kallsyms-style letter and load address.
    public func objects(named name: String) -> [KernelSymbol] {
        var found: [KernelSymbol] = []
        for s in symbols where s.name == name && s.type == 1 && Int(s.section) < elf.sections.count && s.section != 0 {
            let section = elf.sections[Int(s.section)].name
            guard let base = sectionBases[section] else { continue }
            var letter: UInt8 = section.hasPrefix(".bss") ? 0x62 : (section.hasPrefix(".rodata") ? 0x72 : 0x64)  // b r d
            if s.binding == 1 { letter -= 32 }  // global: upper case
            found.append(KernelSymbol(address: base &+ s.value, type: letter, name: name, module: module, ordinal: found.count + 1, index: -1))
        }
        return found
    }

    /// st_size of the object named `name`, when there is exactly one.
    public func size(of name: String) -> UInt64? {
        let all = symbols.filter { $0.name == name && $0.type == 1 }
        return all.count == 1 ? all[0].size : nil
    }

    /// Variable name -> parameter type for every parameter whose ops or getter is a standard one. Offsets are
    /// those of struct kernel_param / kernel_param_ops in this kernel's BTF.
    public func parameterTypes(paramSize: Int, opsOffset: Int, argOffset: Int, getOffset: Int?) -> [String: ModuleParameterType] {
        guard paramSize > 0, let p = elf.sections.firstIndex(where: { $0.name == "__param" }) else { return [:] }
        var relocs: [UInt64: ELFFile.Relocation] = [:]
        for r in elf.relocations(for: p) { relocs[r.offset] = r }
        var result: [String: ModuleParameterType] = [:]
        for i in 0..<(elf.sections[p].size / paramSize) {
            let base = UInt64(i * paramSize)
            guard let ops = relocs[base + UInt64(opsOffset)], let arg = relocs[base + UInt64(argOffset)],
                  ops.symbol < symbols.count, arg.symbol < symbols.count else { continue }
            let opsSymbol = symbols[ops.symbol]
            var type: ModuleParameterType?
            if opsSymbol.section == 0 {
                type = ModuleParameterType(ops: opsSymbol.name)
            } else if let getOffset, Int(opsSymbol.section) < elf.sections.count {
                // The module's own ops: which getter does its .get hold?
                let at = UInt64(bitPattern: Int64(bitPattern: opsSymbol.value) &+ ops.addend) &+ UInt64(getOffset)
                if let get = elf.relocations(for: Int(opsSymbol.section)).first(where: { $0.offset == at }), get.symbol < symbols.count {
                    type = ModuleParameterType(getter: symbols[get.symbol].name)
                }
            }
            guard let type else { continue }
            // The variable: the object at (section, offset) the arg relocation points to.
            let argSymbol = symbols[arg.symbol]
            let offset = UInt64(bitPattern: Int64(bitPattern: argSymbol.value) &+ arg.addend)
            let name = argSymbol.type == 1 && arg.addend == 0 ? argSymbol.name
                : symbols.first(where: { $0.type == 1 && $0.section == argSymbol.section && $0.value == offset })?.name
            if let name, !name.isEmpty { result[name] = type }
        }
        return result
    }
}

/// A module parameter's type, as the kernel's `param_ops_<type>` (module_param) or, for a module's own
/// ops (module_param_cb), its standard getter `param_get_<type>` names it (kernel/params.c).
public enum ModuleParameterType: String, Sendable, CaseIterable {
    case byte, short, ushort, int, uint, hexint, long, ulong, ullong, bool, invbool, charp

    /// From a `param_ops_*` symbol name (`param_ops_bool_enable_only` is a bool); nil for any other name.
    public init?(ops symbol: String) {
        guard symbol.hasPrefix("param_ops_") else { return nil }
        let suffix = symbol.dropFirst("param_ops_".count)
        self.init(rawValue: suffix == "bool_enable_only" ? "bool" : String(suffix))
    }

    /// From a `param_get_*` getter name; nil for any other name.
    public init?(getter symbol: String) {
        guard symbol.hasPrefix("param_get_") else { return nil }
        self.init(rawValue: String(symbol.dropFirst("param_get_".count)))
    }

    /// The C type as BTF names it ("long unsigned int"; "char *" for charp).
    public var cName: String {
        switch self {
        case .byte: "unsigned char"
        case .short: "short int"
        case .ushort: "short unsigned int"
        case .int: "int"
        case .uint, .hexint: "unsigned int"
        case .long: "long int"
        case .ulong: "long unsigned int"
        case .ullong: "long long unsigned int"
        case .bool, .invbool: "_Bool"
        case .charp: "char *"
        }
    }
}
