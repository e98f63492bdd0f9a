import BTF
import KernelSymbols

/// Types of module parameters, from the module's own parameter table.
///
/// Each loaded module's `struct module` (the `__this_module` symbol) points at its `struct kernel_param`
/// array (`kp`, `num_kp`). A parameter's `ops` is one of the kernel's `param_ops_*` (found by address in
/// kallsyms) and names its C type; for a module's own ops (module_param_cb), the standard getter in
/// `ops->get` (param_get_int, …) does. `arg` is the variable's address.
final class ModuleParameters {
    unowned let evaluator: Evaluator
    private var cache: [String: [UInt64: CType]] = [:]

    init(evaluator: Evaluator) { self.evaluator = evaluator }

    func type(of symbol: KernelSymbol) throws -> CType? {
        guard let module = symbol.module else { return nil }
        if cache[module] == nil { cache[module] = try load(module) }
        return cache[module]?[symbol.address]
    }

    private func load(_ module: String) throws -> [UInt64: CType] {
        let e = evaluator
        let table = try e.symbols
        guard let this = try? table.resolve("\(module):__this_module") else { return [:] }
        let vmlinux = e.types.vmlinux
        guard let moduleType = try vmlinux.lookup("module").first(where: { try vmlinux.kind(of: $0) == .structure }),
              let paramType = try vmlinux.lookup("kernel_param").first(where: { try vmlinux.kind(of: $0) == .structure })
        else { return [:] }
        let mod = Object(type: .btf(vmlinux, moduleType), address: this.address)
        // Feature detection: the members must exist in this kernel's struct module / kernel_param.
        guard let kpMember = try mod.type.member("kp"), let numMember = try mod.type.member("num_kp"),
              let opsMember = try CType.btf(vmlinux, paramType).member("ops"),
              let argMember = try CType.btf(vmlinux, paramType).member("arg") else {
            e.warn("this kernel's struct module has no kp/num_kp: module parameter types unavailable")
            return [:]
        }
        let kp = try Object(type: kpMember.type, address: this.address + UInt64(kpMember.bitOffset / 8)).scalar(e.memory)
        let count = try Object(type: numMember.type, address: this.address + UInt64(numMember.bitOffset / 8)).scalar(e.memory)
        guard kp != 0, count > 0, count < 4096 else { return [:] }
        let stride = UInt64(try vmlinux.size(of: paramType))
        let opsType = try vmlinux.lookup("kernel_param_ops").first(where: { try vmlinux.kind(of: $0) == .structure })
        let getMember = try opsType.flatMap { try CType.btf(vmlinux, $0).member("get") }
        var result: [UInt64: CType] = [:]
        for i in 0..<count {
            let base = kp + i * stride
            let ops = try e.readPointer(base + UInt64(opsMember.bitOffset / 8))
            let arg = try e.readPointer(base + UInt64(argMember.bitOffset / 8))
            guard let (k, off) = table.kallsyms.nearest(to: ops, moduleRanges: table.moduleRanges), off == 0 else { continue }
            let opsName = table.kallsyms.name(k)
            if opsName == "param_ops_charp" {
                if let char = vmlinux.lookup("char").first(where: { (try? vmlinux.kind(of: $0)) == .int }) {
                    result[arg] = .pointer(.btf(vmlinux, char))
                }
                continue
            }
            var typeName = ModuleParameterType(ops: opsName)?.cName
            if typeName == nil, let getMember {
                // ops->get names the type when the ops are the module's own.
                let getter = try e.readPointer(ops + UInt64(getMember.bitOffset / 8))
                if getter == UInt64(0) { continue }
                if let (g, goff) = table.kallsyms.nearest(to: getter, moduleRanges: table.moduleRanges), goff == 0 {
                    let getterName = table.kallsyms.name(g)
                    if getterName == "param_get_charp", let char = vmlinux.lookup("char").first(where: { (try? vmlinux.kind(of: $0)) == .int }) {
                        result[arg] = .pointer(.btf(vmlinux, char))
                        continue
                    }
                    typeName = ModuleParameterType(getter: getterName)?.cName
                }
            }
            guard let typeName,
                  let id = vmlinux.lookup(typeName).first(where: { (try? vmlinux.kind(of: $0)) == .int }) else { continue }
            result[arg] = .btf(vmlinux, id)
        }
        return result
    }
}
