import ArgumentParser
import Glibc
import KernelSource
import KreachSupport
import ScriptGen

/// The script options gen and run share.
struct ScriptOptions: ParsableArguments {
    @Option(name: .customShort("e"), help: ArgumentHelp("The program text (instead of a file).", valueName: "PROGRAM"))
    var program: String?

    @Argument(help: "The script file (.bt).")
    var file: String?

    func validate() throws {
        if (program == nil) == (file == nil) { throw ValidationError("give a SCRIPT file or -e PROGRAM (one of them)") }
    }

    /// (text, name used in messages)
    func load() throws -> (String, String) {
        if let program { return (program, "-e") }
        guard let file else { throw ValidationError("no script") }
        return (String(decoding: try FileBytes.read(file), as: UTF8.self), file)
    }

    /// Expands the script against the kernel: addresses are resolved now, never cached.
    func expand(_ kernelOptions: KernelOptions) throws -> (String, String, [String]) {
        let (expanded, name, generator) = try expand(kernelOptions, attachMarker: nil)
        return (expanded, name, generator.notes)
    }

    /// The same, with `attachMarker` printed from the script's BEGIN when it has an unload guard; also
    /// returns the generator (it knows the guarded modules).
    func expand(_ kernelOptions: KernelOptions, attachMarker: String?) throws -> (String, String, ScriptGenerator) {
        let (text, name) = try load()
        let kernel = try kernelOptions.openKernel()
        let generator = try ScriptGenerator(kernel: kernel, capture: CaptureBuilder(kernel: kernel, bpftrace: try? Bpftrace.find()))
        generator.attachMarker = attachMarker
        let expanded = try generator.expand(text, file: name)
        return (expanded, name, generator)
    }
}

struct Gen: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gen",
        abstract: "Print the plain bpftrace script for a script that names kernel globals (mod`var).",
        discussion: """
            In the script, a kernel global is written DTrace-style: lockd`nlm_files, brd`rd_size, or `pid_max for
            vmlinux, anywhere an expression may stand, inside any expression `kreach show` accepts (walkers aside):
            casts to structs, pointers and typedefs (module types too: (lockd:struct nlm_file *)), &, *, -, .member,
            ->member, [index] (an index kreach can't evaluate, such as $i or arg0, is left to bpftrace), per_cpu(),
            and current (the probed task). It becomes plain bpftrace with typed absolute reads. A global of unknown
            type needs a cast: ((struct miscdevice)loop`loop_misc).minor, or an integer cast of its width,
            (uint64)brd`rd_size. Types follow `kreach show`'s rules; no kernel memory is read.
            Addresses are resolved at every gen/run, never cached. A script
            using module globals gets an unload guard (module:module_free) that exits before freed memory is read.
            A line `@kreach.capture(FUNC[, NAME])` becomes `kreach capture FUNC`'s probe, storing FUNC's return
            value in @NAME (default @FUNC).
            A chain walk is a statement: list_for_each_entry(struct task_struct, &current->tasks, tasks, $t) { BODY }
            (also _reverse, hlist_for_each_entry, llist_for_each_entry, hlist_nulls_for_each_entry; an optional 5th
            argument MAX, 1 to 4096, default 1024, bounds it) becomes a bounded while loop; rbtree, xarray, idr,
            maple tree, hash_for_each and bitmap walks stay in `kreach show`.
            """)

    @OptionGroup var kernel: KernelOptions
    @OptionGroup var script: ScriptOptions

    func run() throws {
        let (expanded, _, notes) = try script.expand(kernel)
        for n in notes { StandardError.write("kreach: note: \(n)") }
        print(expanded, terminator: expanded.hasSuffix("\n") ? "" : "\n")
    }
}

struct RunScript: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a bpftrace script that names kernel globals (mod`var); see `kreach gen`.",
        discussion: "Arguments after `--` go to bpftrace. bpftrace's own errors keep the script's line numbers.")

    @OptionGroup var kernel: KernelOptions
    @OptionGroup var script: ScriptOptions

    @Argument(parsing: .postTerminator, help: "Arguments for bpftrace (after --).")
    var bpftraceArguments: [String] = []

    func run() throws {
        let bpftrace = try Bpftrace.find()
        guard case .none = kernel.snapshot else {
            throw Failure(message: "run needs the live kernel (use gen with --kernel)", code: 1)
        }
        // A line no script prints by chance: BEGIN prints it once the probes (and the unload guard) are attached.
        let marker = "kreach-attached-\(getpid())-\(UInt64.random(in: 1...UInt64.max))"
        let (expanded, name, generator) = try script.expand(kernel, attachMarker: marker)
        for n in generator.notes { StandardError.write("kreach: note: \(n)") }
        let guarded = !generator.guardedModules.isEmpty
        try RunScript.testHandshake()
        let status = try bpftrace.run(script: expanded, displayName: name == "-e" ? "stdin" : name, arguments: bpftraceArguments,
                                      attachMarker: guarded ? marker : nil,
                                      onAttached: { try generator.modulesChangedSinceResolution() })
        if status != 0 {
            if generator.walkCount > 0 {
                // The verifier follows every iteration of a walk's loop (nested walks multiply).
                StandardError.write("kreach: note: if bpftrace could not load the program, a walk's loop may be past the BPF verifier's limits: lower its MAX (default \(ScriptGenerator.defaultWalkBound)) or nest fewer walks")
            }
            throw Failure(message: "", code: status)
        }
    }

    /// For tests only: with KREACH_TEST_RESOLVED_FIFO set to a FIFO, writes "resolved" to it once the script's
    /// addresses are resolved, then waits until the test writes to it and closes it, so a test can change the
    /// kernel (remove a module) exactly between resolution and bpftrace's attachment.
    static func testHandshake() throws {
        guard let p = getenv("KREACH_TEST_RESOLVED_FIFO") else { return }
        let path = String(cString: p)
        var st = stat()
        guard stat(path, &st) == 0, st.st_mode & S_IFMT == S_IFIFO else {
            throw Failure(message: "KREACH_TEST_RESOLVED_FIFO=\(path) is not a FIFO", code: 1)
        }
        let w = open(path, O_WRONLY)
        guard w >= 0 else { throw Failure(message: "can't open \(path): \(String(cString: strerror(errno)))", code: 1) }
        _ = write(w, "resolved\n", 9)
        close(w)
        let r = open(path, O_RDONLY)
        guard r >= 0 else { throw Failure(message: "can't open \(path): \(String(cString: strerror(errno)))", code: 1) }
        var b = [UInt8](repeating: 0, count: 64)
        while read(r, &b, b.count) > 0 {}
        close(r)
    }
}
