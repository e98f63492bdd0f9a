import BTF
import KernelSource
import KernelSymbols
import KreachSupport
import Memory

/// Kernel metadata taken from a dump itself, written as a snapshot directory (the layout `kreach snapshot`
/// writes) so every command reads it like any snapshot: vmlinux BTF from the image's .BTF section
/// (`__start_BTF`…`__stop_BTF`), symbols from the in-memory kallsyms tables, the module list from `modules`
/// with each module's symbols (`mod->kallsyms`: symtab, strtab, typetab) and split BTF (the `btf_modules`
/// list's `btf->data`: `mod->btf_data` is freed after load), the release from VMCOREINFO's OSRELEASE.
public enum DumpMetadata {
    /// Notes for the user (what was missing or guessed).
    public struct Report { public var notes: [String] = [] }

    /// At most this many modules and bytes of BTF per object (a corrupt list is an error, not a hang).
    static let maxModules = 10_000
    static let maxBTF = 512 << 20

    public static func write(from core: VMCoreMemory, into dir: PrivateDirectory) throws -> Report {
        var report = Report()
        let tables: InMemoryKallsyms.Tables
        if let named = InMemoryKallsyms.Tables(core.info.symbols) {
            tables = named
        } else {
            // Kernels before 6.0 (without the backport) don't name the tables in VMCOREINFO: search the image.
            guard let text = core.info.symbols["_stext"] else {
                throw MemoryError.unavailable("\(core.path): VMCOREINFO has neither SYMBOL(kallsyms_*) nor SYMBOL(_stext): give a snapshot of the same kernel with --kernel DIR")
            }
            do {
                tables = try InMemoryKallsyms.Tables.search(memory: core, text: text)
            } catch {
                throw MemoryError.unavailable("\(core.path): VMCOREINFO has no SYMBOL(kallsyms_*) entries and searching the image failed (\(error)): give a snapshot of the same kernel with --kernel DIR")
            }
            report.notes.append("VMCOREINFO names no kallsyms tables: found them by searching the kernel image (token table at \(Hex.short(tables.tokenTable)))")
        }
        let kallsyms = try InMemoryKallsyms(memory: core, tables: tables)
        var byName: [String: UInt64] = [:]
        for s in kallsyms.symbols where byName[s.name] == nil { byName[s.name] = s.address }
        func symbol(_ name: String) throws -> UInt64 {
            guard let a = byName[name] else { throw MemoryError.unavailable("\(core.path): the kernel's kallsyms has no \(name)") }
            return a
        }
        if let release = core.info.osRelease { try dir.create(KernelFile.release.snapshotName, Array((release + "\n").utf8)) }
        // The build-id (VMCOREINFO BUILD-ID) as the kernel's notes: inferred types are cached under it.
        if let id = core.info.buildID.flatMap(Hex.bytes) { try dir.create(KernelFile.notes.snapshotName, ELFFile.gnuBuildIDNote(id)) }
        // vmlinux BTF.
        let start = try symbol("__start_BTF"), stop = try symbol("__stop_BTF")
        guard stop > start, stop - start <= UInt64(maxBTF) else {
            throw MemoryError.unavailable("\(core.path): __start_BTF..__stop_BTF is not a BTF section (\(Hex.short(start))..\(Hex.short(stop)))")
        }
        try dir.makeDirectory(KernelFile.btf.snapshotName)
        let vmlinuxBytes = try core.read(start, count: Int(stop - start))
        try dir.create("btf/vmlinux", vmlinuxBytes)
        let btf = try BTF(path: dir.path + "/btf/vmlinux", name: "vmlinux")
        let layout = MemberOffsets(btf: btf)

        var lines = kallsyms.symbols.map { "\(hex16($0.address)) \($0.letter) \($0.name)" }
        var moduleLines: [String] = []
        // Modules: the `modules` list of struct module, linked through module.list.
        let listHead = try symbol("modules")
        let mList = try layout.offset("module", "list"), mName = try layout.offset("module", "name")
        let mKallsyms = try layout.offset("module", "kallsyms")
        let (kSymtab, kNum, kStrtab, kTypetab) = (try layout.offset("mod_kallsyms", "symtab"), try layout.offset("mod_kallsyms", "num_symtab"),
                                                  try layout.offset("mod_kallsyms", "strtab"), try? layout.offset("mod_kallsyms", "typetab"))
        // The module's core text: module.mem[MOD_TEXT] (6.4+) or module.core_layout.
        let (baseOffset, sizeOffset): (UInt64, UInt64)
        if let mem = try? layout.offset("module", "mem") {
            baseOffset = mem + (try layout.offset("module_memory", "base"))
            sizeOffset = mem + (try layout.offset("module_memory", "size"))
        } else {
            let core = try layout.offset("module", "core_layout")
            baseOffset = core + (try layout.offset("module_layout", "base"))
            sizeOffset = core + (try layout.offset("module_layout", "size"))
        }
        var modulesByAddress: [UInt64: String] = [:]
        var node = try core.pointer(listHead)
        var count = 0
        while node != listHead {
            count += 1
            guard count <= maxModules else { throw MemoryError.unavailable("\(core.path): the modules list has more than \(maxModules) entries (a cycle?)") }
            let module = node &- mList
            let nameBytes = try core.read(module + mName, count: 56)
            let name = String(decoding: nameBytes.prefix { $0 != 0 }, as: UTF8.self)
            modulesByAddress[module] = name
            let base = try core.pointer(module + baseOffset)
            let size = try core.u32(module + sizeOffset)
            moduleLines.append("\(name) \(size) 0 - Live \(Hex.short(base))")
            // The module's symbols, as /proc/kallsyms prints them.
            let mk = try core.pointer(module + mKallsyms)
            if mk != 0 { do {
                let symtab = try core.pointer(mk + kSymtab), strtab = try core.pointer(mk + kStrtab)
                let n = Int(try core.u32(mk + kNum))
                let typetab = try kTypetab.map { try core.pointer(mk + $0) }
                guard n >= 0, n < 1 << 20 else { throw MemoryError.unavailable("\(core.path): module \(name) has \(n) symbols") }
                let syms = try core.read(symtab, count: 24 * n)
                let types = try typetab.map { try core.read($0, count: n) }
                var strings: [UInt8] = []
                for i in 1..<max(n, 1) {
                    let o = 24 * i
                    let nameOffset = UInt64(syms.le32(o)), value = syms.le64(o + 8), shndx = UInt16(syms[o + 6]) | UInt16(syms[o + 7]) << 8
                    guard nameOffset != 0, shndx != 0 else { continue }
                    while strings.count <= Int(nameOffset) + 512 && strings.count < 16 << 20 {
                        strings += try core.read(strtab + UInt64(strings.count), count: 4096 - Int((strtab + UInt64(strings.count)) & 4095))
                    }
                    guard Int(nameOffset) < strings.count else { continue }
                    let symbolName = String(decoding: strings[Int(nameOffset)...].prefix { $0 != 0 }, as: UTF8.self)
                    let letter = types.map { Character(Unicode.Scalar($0[i])) } ?? "?"
                    if symbolName.isEmpty || letter == "U" { continue }
                    lines.append("\(hex16(value)) \(letter) \(symbolName)\t[\(name)]")
                }
            } catch { report.notes.append("module \(name): its symbols can't be read (\(error))") } }
            node = try core.pointer(node)
        }
        try dir.create(KernelFile.kallsyms.snapshotName, Array((lines.joined(separator: "\n") + "\n").utf8))
        try dir.create(KernelFile.modules.snapshotName, Array(moduleLines.reversed().map { $0 + "\n" }.joined().utf8))
        // Module BTF: the btf_modules list (kernel/bpf/btf.c struct btf_module: list, module, btf).
        if let head = byName["btf_modules"] {
            let bmList = try layout.offset("btf_module", "list"), bmModule = try layout.offset("btf_module", "module")
            let bmBTF = try layout.offset("btf_module", "btf")
            let bData = try layout.offset("btf", "data"), bSize = try layout.offset("btf", "data_size")
            var node = try core.pointer(head)
            var seen = 0
            while node != head {
                seen += 1
                guard seen <= maxModules else { break }
                let entry = node &- bmList
                if let name = modulesByAddress[try core.pointer(entry + bmModule)] {
                    let b = try core.pointer(entry + bmBTF)
                    let data = try core.pointer(b + bData), size = Int(try core.u32(b + bSize))
                    if size > 0 && size <= maxBTF {
                        try dir.create("btf/" + name, try core.read(data, count: size))
                    }
                }
                node = try core.pointer(node)
            }
        } else {
            report.notes.append("kallsyms has no btf_modules: modules have no BTF in this dump")
        }
        return report
    }

    static func hex16(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: max(0, 16 - s.count)) + s
    }
}

extension VMCoreMemory {
    func pointer(_ address: UInt64) throws -> UInt64 { try read(address, count: 8).le64(0) }
    func u32(_ address: UInt64) throws -> UInt32 { try read(address, count: 4).le32(0) }
}

extension Array where Element == UInt8 {
    func le32(_ o: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(self[o + $1]) << (8 * UInt32($1)) } }
    func le64(_ o: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(self[o + $1]) << (8 * UInt64($1)) } }
}

extension DumpMetadata {
    /// Each CPU's running task when the dump was taken, and the expression that reads it: the per-CPU
    /// variable the kernel keeps it in, `pcpu_hot.current_task` (6.2+) or `current_task`, whichever
    /// vmlinux BTF has (feature detection).
    public struct CPUTask { public let cpu: Int; public let task: UInt64; public let pid: Int32; public let comm: String; public let expression: String }

    public static func cpuTasks(core: VMCoreMemory, kernel: Kernel) throws -> [CPUTask] {
        let btf = try kernel.types().vmlinux
        let symbols = try kernel.symbols()
        let layout = MemberOffsets(btf: btf)
        func isVariable(_ name: String) -> Bool { btf.lookup(name).contains { (try? btf.kind(of: $0)) == .variable } }
        let variable: UInt64, member: UInt64, form: (Int) -> String
        if isVariable("pcpu_hot") {
            variable = try symbols.resolve("pcpu_hot").address
            member = try layout.offset("pcpu_hot", "current_task")
            form = { "per_cpu(pcpu_hot, \($0)).current_task" }
        } else if isVariable("current_task") {
            variable = try symbols.resolve("current_task").address
            member = 0
            form = { "per_cpu(current_task, \($0))" }
        } else {
            throw MemoryError.unavailable("vmlinux BTF has neither pcpu_hot nor current_task: can't tell each CPU's task")
        }
        let offsets = try symbols.resolve("__per_cpu_offset").address
        let cpus = Int(try core.u32(try symbols.resolve("nr_cpu_ids").address))
        let pidOffset = try layout.offset("task_struct", "pid"), commOffset = try layout.offset("task_struct", "comm")
        var result: [CPUTask] = []
        for cpu in 0..<min(cpus, 8192) {
            let base = try core.pointer(offsets + UInt64(8 * cpu))
            let task = try core.pointer(variable &+ base &+ member)
            let pid = Int32(bitPattern: try core.u32(task + pidOffset))
            let comm = String(decoding: try core.read(task + commOffset, count: 16).prefix { $0 != 0 }, as: UTF8.self)
            result.append(CPUTask(cpu: cpu, task: task, pid: pid, comm: comm, expression: form(cpu)))
        }
        return result
    }
}
