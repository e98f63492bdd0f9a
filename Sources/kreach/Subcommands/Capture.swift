import ArgumentParser
import KernelSource
import KreachSupport
import ScriptGen

struct Capture: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capture",
        abstract: "Print a bpftrace snippet that stores what FUNC returns (or receives) in a global map.",
        discussion: """
            kretprobe/kprobe when the kernel has kprobes, else fexit/fentry (kretfunc/kfunc before bpftrace 0.19);
            typed from FUNC's BTF prototype. When only a clone (FUNC.isra.0, FUNC.constprop.1) exists, the clone
            is probed with a warning that its signature may differ. Without a BTF prototype (a module built
            without BTF, as DKMS modules are): the return value is read as int64 and --arg N as the untyped
            64-bit register argN (by index only, kprobes only), each with a note.
            """)

    @OptionGroup var kernel: KernelOptions

    @Option(name: .customLong("as"), help: "The map's name (default: FUNC).")
    var mapName: String?

    @Option(help: "Capture this argument (index from 0, or parameter name) instead of the return value.")
    var arg: String?

    @Argument(help: "The function.")
    var function: String

    func run() throws {
        let k = try kernel.openKernel()
        let result = try CaptureBuilder(kernel: k, bpftrace: try? Bpftrace.find()).build(function: function, name: mapName, arg: arg)
        if kernel.json {
            print(JSON.object([("function", .string(function)), ("snippet", .string(result.snippet)),
                               ("notes", .array(result.notes.map(JSON.string)))]).pretty)
            return
        }
        for n in result.notes { StandardError.write("kreach: note: \(n)") }
        print(result.snippet)
    }
}
