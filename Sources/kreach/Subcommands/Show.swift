import ArgumentParser
import KernelObject
import KernelSource
import KreachSupport
import Memory

/// Options shared by show and watch.
struct ReadOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Memory reader: bpf (BPF test-run), kcore (/proc/kcore), or auto.", valueName: "READER"))
    var memory: String = "auto"

    @Option(help: "Nesting levels of structs and arrays to expand.")
    var depth: Int = 6

    @Flag(help: "Print integers in hex.")
    var hex = false

    func validate() throws {
        guard MemoryChoice(rawValue: memory) != nil else { throw ValidationError("--memory takes bpf, kcore or auto") }
        guard depth >= 0 else { throw ValidationError("--depth must be 0 or more") }
    }

    func evaluator(_ kernel: Kernel, core: VMCoreMemory? = nil) throws -> (Evaluator, ObjectFormatter) {
        let reader: any KernelMemory
        if let core { reader = core } else {
            guard Core.scratch == nil else {
                throw Failure(message: "this command reads the live kernel only: --core works with show, sym, type, where and why", code: 1)
            }
            guard case .live = kernel.source else {
                throw Failure(message: "reading values needs the live kernel or a dump (--core FILE): --kernel snapshots have no memory", code: 1)
            }
            reader = try (MemoryChoice(rawValue: memory) ?? .auto).open()
        }
        let ev = try Evaluator(kernel: kernel, memory: reader)
        var options = FormatOptions()
        options.depth = depth
        options.hex = hex
        return (ev, ObjectFormatter(evaluator: ev, options: options))
    }
}

struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Print the typed value of kernel globals and expressions (vmlinux and modules), no debuginfo needed.",
        discussion: """
            EXPR: `name`, `mod:name`, `mod`name` (DTrace style), `name#N`/`name@ADDR` for duplicates, `&x`, `*p`,
            `p->f`, `s.f`, `a[i]`, casts `(TYPE)x` such as `(int)pid_max` or `*(struct nlm_file *)0xffff...`,
            integers, `current` (kreach's own task), `per_cpu(VAR, CPU)`.
            Container walks (the kernel's macros): `list_for_each_entry(TYPE, HEAD, MEMBER)`,
            `list_for_each_entry_reverse`, `hlist_for_each_entry(TYPE, HEAD, MEMBER)`, `hlist_nulls_for_each_entry`,
            `rbtree_inorder_for_each_entry(TYPE, ROOT, MEMBER)` (a struct rb_root or rb_root_cached),
            `hash_for_each(TYPE, TABLE, MEMBER[, BUCKETS])` (an array of hlist or hlist_nulls heads, or a pointer
            and BUCKETS; each entry's [bucket]), `for_each_set_bit(ADDR, NBITS)` (the bit numbers);
            each entry is printed, or only --fields (member paths such as pid,comm,mm->map_count), at most --max.
            A global's type comes from a cast, a BTF VAR, its module's parameter table, or is unknown (raw bytes).
            """)

    @OptionGroup var options: KernelOptions
    @OptionGroup var read: ReadOptions

    @Option(help: "For container walks: member paths to print per entry, comma-separated.")
    var fields: String?

    @Option(help: "For container walks: stop after this many entries.")
    var max: Int = 10_000

    @Option(help: "For list, hlist[_nulls], llist and hash walks: follow the pointers in the kernel (one BPF run per batch), from kreach (one read per pointer), or auto (kernel when reading through bpf).")
    var walk: WalkMode = .auto

    @Argument(help: "Expressions.")
    var expressions: [String]

    func validate() throws {
        if expressions.isEmpty { throw ValidationError("give at least one EXPR") }
        if max < 1 { throw ValidationError("--max must be at least 1") }
    }

    func run() throws {
        let (kernel, core) = try options.openKernelAndCore()
        let (ev, fmt) = try read.evaluator(kernel, core: core)
        ev.maxEntries = max
        ev.walkMode = walk
        let fieldList = fields.map { $0.split(separator: ",").map { $0.trimming(" ") } } ?? []
        let renderer = ShowRenderer(evaluator: ev, formatter: fmt, fields: fieldList, json: options.json)
        var results: [JSON] = []
        var failed = false
        for expr in expressions {
            let r = renderer.render(expr)
            r.lines.forEach { print($0) }
            if let json = r.json { results.append(json) }
            if let error = r.error {
                StandardError.write("kreach: \(error)")
                failed = true
            }
            for n in r.notes { StandardError.write("kreach: note: \(n)") }
        }
        if options.json { print(JSON.array(results).pretty) }
        if failed { throw Failure(message: "", code: 1) }
    }
}

extension WalkMode: ExpressibleByArgument {}
