import BTF
import Glibc
import KernelSource
import KernelSymbols
import KreachSupport
import TypeInference

/// `kreach type --of GLOBAL` / `--of-all`: types inferred from the kernel's code.
func runInference(_ kernel: Kernel, global: String?, imagePath: String?, json: Bool) throws {
    let inference = CachedInference(kernel: kernel, imagePath: imagePath)
    var btf = try kernel.types().vmlinux
    func describe(_ id: TypeID) -> String { (try? btf.cDeclaration(id, "")) ?? btf.describe(id) }
    guard let global else {
        for t in try inference.inferrer().inferAll() {
            print(Terminal.escaped("\(t.name)\t\(t.type.map(describe) ?? "")"))
        }
        return
    }
    defer { for n in inference.notes { StandardError.write("kreach: note: " + n) } }
    let t: InferredType
    if let (module, name) = try GlobalName(parsing: global).inModule {
        t = try inferModuleGlobal(kernel, module: module, name: name, btf: &btf)
    } else {
        t = try inference.infer(named: global)
    }
    if let file = t.cachedIn { StandardError.write("kreach: note: read from the type cache " + file) }
    if json {
        let candidates = t.candidates.map { c in
            JSON.object([("type", .string(describe(c.type))), ("votes", .uint(UInt64(c.votes))),
                         ("evidence", .array(c.sources.map { .string($0) }))])
        }
        print(JSON.object([("name", .string(t.name)), ("address", .string(Hex.address(t.address))),
                           ("extent", t.extent.map { .uint($0) } ?? .null), ("type", t.type.map { .string(describe($0)) } ?? .null),
                           ("note", .string(t.note)), ("candidates", .array(candidates))]).pretty)
        return
    }
    let extent = t.extent.map { "\($0) bytes\(global.contains(":") ? "" : " to the next symbol")" } ?? "last symbol"
    print(Terminal.escaped("\(t.name) at \(Hex.address(t.address)) (\(extent)): \(t.type.map(describe) ?? "no type")"))
    print(Terminal.escaped("  \(t.note)"))
    for c in t.candidates {
        let size = (try? btf.size(of: c.type)).map { "\($0) bytes" } ?? "no size"
        print(Terminal.escaped("  candidate \(describe(c.type)) (\(size)): \(c.votes) use\(c.votes == 1 ? "" : "s")"))
        for s in c.sources { print(Terminal.escaped("    \(s)")) }
    }
}


/// A loaded module's global typed from its .ko (`CachedModuleInference`); `btf` becomes the module's.
func inferModuleGlobal(_ kernel: Kernel, module: String, name: String, btf: inout BTF) throws -> InferredType {
    guard let object = try kernel.loadModuleObject(module) else {
        throw KernelError("\(module):\(name): a module global is typed from the loaded module's own .ko, and the kernel has none for \(module) (a loaded module, /lib/modules/RELEASE holding its .ko with the build-id of /sys/module/\(module)/notes, or a snapshot that carries it in ko/)")
    }
    let inference = CachedModuleInference(kernel: kernel)
    defer { for n in inference.notes { StandardError.write("kreach: note: " + n) } }
    btf = try inference.btf(of: module)
    return try inference.infer(object, named: name)
}
