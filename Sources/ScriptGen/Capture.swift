import BTF
import KernelSource
import KernelSymbols
import KreachSupport

/// Builds the bpftrace snippet that stores what a function returns (or one argument) in a global map.
public struct CaptureBuilder {
    public let kernel: Kernel
    /// nil when bpftrace isn't installed (then fentry naming follows bpftrace >= 0.19).
    public let bpftrace: Bpftrace?

    public init(kernel: Kernel, bpftrace: Bpftrace?) {
        self.kernel = kernel
        self.bpftrace = bpftrace
    }

    public struct Result {
        public let snippet: String
        public let notes: [String]
    }

    /// Whether kprobes can attach: the kprobe PMU or kprobe_events (live), or a kprobe blacklist (snapshot).
    var kprobesAvailable: Bool {
        switch kernel.source {
        case .live:
            return FileBytes.exists("/sys/bus/event_source/devices/kprobe") || FileBytes.exists(kernel.path(.events) + "/../kprobe_events")
        case .snapshot:
            return FileBytes.exists(kernel.path(.kprobesBlacklist))
        }
    }

    /// `arg` is nil for the return value, else a 0-based index or a parameter name.
    public func build(function: String, name: String?, arg: String?) throws -> Result {
        var notes: [String] = []
        // Probes name a function, not one symbol: a module or a #N/@ADDRESS chooser can't be honoured.
        if let c = function.first(where: { ":`#@".contains($0) }) {
            throw ScriptRunError("\(function): capture takes a function's bare name ('\(c)' picks one symbol, which a probe by name can't)")
        }
        let symbols = try kernel.symbols()
        let types = try kernel.types()
        // The function's BTF prototype (vmlinux or a module).
        var proto: (BTF, BTFType)?
        for btf in try types.allObjects() {
            if let id = try btf.lookup(function).first(where: { try btf.kind(of: $0) == .function && btf.owner(of: $0) === btf }) {
                proto = (btf, try btf.type(try btf.type(id).target))
                break
            }
        }
        // The symbol to probe: the function itself, else its one probe-able clone.
        let text = symbols.find(.name(module: nil, name: function, ordinal: nil, address: nil)).filter { $0.isText }
        guard !text.isEmpty || proto != nil else {
            throw ScriptRunError("\(function): no such function in kallsyms or BTF (inlined into every caller, or a macro)")
        }
        let exact = text.filter { $0.name == function }
        let clones = text.filter { $0.name != function && !$0.isColdFragment }
        var probeName = function
        if exact.isEmpty {
            guard clones.count == 1 else {
                throw ScriptRunError("\(function) exists only as clones \(clones.map(\.name).joined(separator: ", ")); probe one of them by name")
            }
            probeName = clones[0].name
            notes.append("\(function) exists only as its clone \(probeName): a clone's signature may differ from the source (arguments removed or reordered)")
        }
        let useKprobe = kprobesAvailable || proto == nil || probeName != function
        if !useKprobe && proto == nil { throw ScriptRunError("no kprobes on this kernel and no BTF for \(function): it can't be probed") }
        if !kprobesAvailable {
            if probeName != function { throw ScriptRunError("\(probeName) can only be probed with kprobes, and this kernel has none") }
            notes.append("this kernel has no kprobes: using fentry/fexit (BTF)")
        }
        let mapName = "@" + (name ?? function)
        if let arg {
            guard let (btf, p) = proto else {
                // Untyped: kprobe's argN (the Nth register argument, 64 bits); only by index, only with kprobes.
                let why = noBTFReason(function, text)
                guard let index = Int(arg), (0..<6).contains(index) else {
                    throw ScriptRunError("\(function) has no BTF prototype (\(why)), so its parameters have no names: give --arg as an index 0-5")
                }
                guard kprobesAvailable else {
                    throw ScriptRunError("\(function) has no BTF prototype (\(why)) and this kernel has no kprobes: its argument can't be read")
                }
                notes.append("\(function) has no BTF prototype (\(why)): arg\(index) is stored untyped (64 bits, as the register holds it); cast it in your script")
                return Result(snippet: "kprobe:\(probeName) { \(mapName) = arg\(index); }", notes: notes)
            }
            let index = Int(arg) ?? p.params.firstIndex { $0.name == arg }
            guard let index, index >= 0, index < p.params.count else {
                throw ScriptRunError("\(function) has no argument \(arg); its parameters: " + p.params.map { btf.describe($0.type) + " " + $0.name }.joined(separator: ", "))
            }
            let param = p.params[index]
            let cast = try castFor(btf, param.type)
            if useKprobe {
                return Result(snippet: "kprobe:\(probeName) { \(mapName) = \(cast)arg\(index); }", notes: notes)
            }
            let probe = (bpftrace?.usesKfuncNames ?? false) ? "kfunc" : "fentry"
            return Result(snippet: "\(probe):\(function) { \(mapName) = \(cast)args->\(param.name); }", notes: notes)
        }
        var cast = "(int64)"
        if let (btf, p) = proto {
            guard p.target != 0 else { throw ScriptRunError("\(function) returns void: capture an argument with --arg") }
            cast = try castFor(btf, p.target)
        } else {
            notes.append("no BTF prototype for \(function) (\(noBTFReason(function, text))): its return type is unknown, read as int64")
        }
        if useKprobe { return Result(snippet: "kretprobe:\(probeName) { \(mapName) = \(cast)retval; }", notes: notes) }
        let probe = (bpftrace?.usesKfuncNames ?? false) ? "kretfunc" : "fexit"
        return Result(snippet: "\(probe):\(function) { \(mapName) = \(cast)retval; }", notes: notes)
    }

    /// Why `function` has no BTF FUNC: its module has no BTF (and how to get it), or BTF leaves it out.
    func noBTFReason(_ function: String, _ text: [KernelSymbol]) -> String {
        let leftOut = "pahole leaves out functions the compiler changed, such as clones"
        guard let module = text.first?.module else { return "vmlinux BTF has no FUNC \(function): \(leftOut)" }
        let types = try? kernel.types()
        if types?.moduleNames.contains(module) == false { return "module \(module) has no BTF; \(TypeLookupError.moduleBTFHowTo)" }
        return "\(module)'s BTF has no FUNC \(function): \(leftOut)"
    }

    /// A bpftrace cast for a BTF type: integers by size and sign, pointers as they are.
    func castFor(_ btf: BTF, _ type: TypeID) throws -> String {
        let r = try btf.type(try btf.resolve(type))
        switch r.kind {
        case .int, .enumeration, .enum64:
            return "(" + (ScriptGenerator.integerType(size: Int(r.size), signed: r.isSigned) ?? "int64") + ")"
        case .pointer:
            return ""
        default:
            throw ScriptRunError("\(btf.describe(type)) is not a scalar: bpftrace can't store it in a map")
        }
    }
}
