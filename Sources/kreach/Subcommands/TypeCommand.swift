import ArgumentParser
import BTF
import KernelSource
import KreachSupport

struct TypeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "type",
        abstract: "Show BTF types of vmlinux and modules as C with offsets and sizes.",
        discussion: """
            NAME forms: `struct task_struct`, `task_struct`, `lockd:struct nlm_file` (lockd's BTF, then
            vmlinux), `vmlinux:#1234` (by BTF id), `pid_t`, `func vfs_read`, `var runqueues`.
            KIND is struct, union, enum, typedef, func, var, datasec, int, float or fwd.
            A name defined in several objects is an error listing each candidate (MODULE:#ID picks one).
            --funcs GLOB lists function prototypes matching GLOB instead (MODULE:GLOB to pin a module).
            --check decodes every type of vmlinux and all module BTF, reporting the first malformed one.
            --of GLOBAL infers a vmlinux global's type from the kernel's code (the image on disk:
            /boot/vmlinuz-RELEASE, a snapshot's vmlinuz, or --image) and lists the candidates with their
            evidence; --of-all does it for every data symbol (name, then the type or nothing, tab-separated).
            """)

    @OptionGroup var options: KernelOptions

    @Flag(help: "Treat each NAME as a glob of function names and print their prototypes.")
    var funcs = false

    @Flag(help: "Validate all BTF (vmlinux and modules) and report counts.")
    var check = false

    @Option(help: ArgumentHelp("Infer the type of this vmlinux global from the kernel's code.", valueName: "GLOBAL"))
    var of: String?

    @Flag(help: "Infer the types of every vmlinux data symbol (tab-separated name and type).")
    var ofAll = false

    @Option(help: ArgumentHelp("The kernel image (vmlinuz or vmlinux) for --of.", valueName: "PATH"))
    var image: String?

    @Argument(help: "Type names.")
    var names: [String] = []

    func validate() throws {
        if names.isEmpty && !check && of == nil && !ofAll { throw ValidationError("give at least one NAME (or --check, --of)") }
    }

    func run() throws {
        let kernel = try options.openKernel()
        if of != nil || ofAll { return try runInference(kernel, global: of, imagePath: image, json: options.json) }
        let db = try kernel.types()
        if check { return try runCheck(db) }
        var results: [JSON] = []
        var failed = false
        for name in names {
            if funcs {
                var module: String?
                var pattern = name
                if let colon = name.firstIndex(of: ":") {
                    module = String(name[..<colon])
                    pattern = String(name[name.index(after: colon)...])
                }
                let found = try db.functions(matching: Glob(pattern), module: module)
                if found.isEmpty {
                    StandardError.write("kreach: no function matches \(name)")
                    failed = true
                }
                for f in found {
                    if options.json { results.append(try f.btf.json(f.id)) } else {
                        print(Terminal.escaped(try f.btf.prototype(ofFunction: f.id) + "; /* \(f.object) */"))
                    }
                }
                continue
            }
            do {
                let match = try db.resolve(name)
                if options.json {
                    results.append(try match.btf.json(match.id))
                } else {
                    let t = try match.btf.type(match.id)
                    print(Terminal.escaped("/* \(match.object): \(t.kind.label) \(t.name.isEmpty ? "(anon)" : t.name), BTF id \(match.id) */"))
                    print(Terminal.escaped(try match.btf.renderC(match.id)))
                }
            } catch let e as TypeLookupError {
                StandardError.write("kreach: \(e)")
                failed = true
            }
        }
        if options.json { print(JSON.array(results).pretty) }
        if failed { throw Failure(message: "", code: 1) }
    }

    private func runCheck(_ db: TypeDatabase) throws {
        var rows: [JSON] = []
        for btf in try db.allObjects() {
            try btf.validateAll()
            if options.json {
                rows.append(.object([("object", .string(btf.objectName)), ("types", .uint(UInt64(btf.localCount))),
                                     ("first_id", .uint(UInt64(btf.firstID)))]))
            } else {
                print("\(btf.objectName): \(btf.localCount) types (ids \(btf.firstID)..<\(btf.endID)) ok")
            }
        }
        if options.json { print(JSON.array(rows).pretty) }
    }
}
