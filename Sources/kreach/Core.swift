import Glibc
import KernelObject
import KernelSource
import KreachSupport
import Memory

/// `--core FILE`: a vmcore read with the metadata it holds itself (written to a private scratch snapshot
/// for the command's lifetime), or with a snapshot of the same kernel (`--kernel DIR`).
enum Core {
    /// The scratch snapshot, removed at exit.
    nonisolated(unsafe) static var scratch: String?

    static func open(_ path: String, snapshot: String?) throws -> (Kernel, VMCoreMemory) {
        let core = try VMCoreMemory(path: path)
        if let snapshot {
            let kernel = try Kernel(source: .snapshot(snapshot))
            try check(core, against: kernel, snapshot: snapshot)
            return (kernel, explainingCurrent(core, kernel))
        }
        let tmp = (getenv("TMPDIR").map { String(cString: $0) }).flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
        var template = Array((tmp + "/kreach-core.XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw SystemError("create a directory in", tmp, errno: errno) }
        let dir = String(cString: made)
        scratch = dir
        atexit { Core.removeScratch() }
        let report = try DumpMetadata.write(from: core, into: try PrivateDirectory(creating: dir))
        for note in report.notes { StandardError.write("kreach: note: \(note)") }
        let kernel = try Kernel(source: .snapshot(dir))
        return (kernel, explainingCurrent(core, kernel))
    }

    /// `current` in the dump: an error offering each CPU's task.
    static func explainingCurrent(_ core: VMCoreMemory, _ kernel: Kernel) -> VMCoreMemory {
        core.explainCurrent = { [unowned core] in
            do {
                return try DumpMetadata.cpuTasks(core: core, kernel: kernel)
                    .map { "\($0.expression) = \(Hex.short($0.task)) (pid \($0.pid), \(Terminal.escaped($0.comm)))" }.joined(separator: "; ")
            } catch { return "(can't tell: \(error))" }
        }
        return core
    }

    /// A snapshot is of the dumped kernel when its release is the dump's OSRELEASE and its kallsyms puts
    /// _stext where the dump's VMCOREINFO does (same build, same boot: KASLR moves everything otherwise).
    static func check(_ core: VMCoreMemory, against kernel: Kernel, snapshot: String) throws {
        let release = (try? kernel.release())?.trimming(" \n")
        if let want = core.info.osRelease, let release, release != want {
            throw KernelError("--kernel \(snapshot) is of kernel \(release), the dump of \(want)")
        }
        if let stext = core.info.symbols["_stext"], let symbols = try? kernel.symbols(),
           let there = try? symbols.resolve("_stext").address, there != stext {
            throw KernelError("--kernel \(snapshot) has _stext at \(Hex.short(there)), the dump at \(Hex.short(stext)): not the same build and boot")
        }
    }

    static func removeScratch() {
        guard let dir = scratch else { return }
        for name in (try? FileBytes.list(dir + "/btf")) ?? [] { unlink(dir + "/btf/" + name) }
        rmdir(dir + "/btf")
        for name in (try? FileBytes.list(dir)) ?? [] { unlink(dir + "/" + name) }
        rmdir(dir)
    }
}
