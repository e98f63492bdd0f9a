import Memory
import KernelSource

/// What `kreach where TARGET` was asked about.
public enum WhereQuery: Equatable, Sendable {
    /// A type (`struct nlm_file`, `lockd:struct nlm_host`, `pid_t`), as written.
    case type(String)
    /// A module global, `MODULE:NAME` (a backtick already turned into a colon).
    case moduleGlobal(String)
    /// A vmlinux global (`pid_max`, `vmlinux:pid_max`): its bare name.
    case vmlinuxGlobal(String)

    /// Tells a type from a global: a target with a space is a type; so is a name BTF has a type for (a typedef
    /// defined in several modules too) that no symbol has. Otherwise `MODULE:NAME` is a module global and
    /// anything else a vmlinux global.
    public init(_ target: String, kernel: Kernel) {
        let name = String(target.map { $0 == "`" ? ":" : $0 })
        let namesType = ((try? kernel.types().find(TypeQuery.parse(name))) ?? []).isEmpty == false
        if target.contains(" ") || namesType && (try? kernel.symbols().resolve(name)) == nil {
            self = .type(target)
        } else if name.contains(":") && !name.hasPrefix("vmlinux:") {
            self = .moduleGlobal(name)
        } else {
            self = .vmlinuxGlobal(name.split(separator: ":").last.map(String.init) ?? name)
        }
    }
}

/// A `where` query the kernel source can't answer.
public enum WhereQueryError: Error, CustomStringConvertible, Equatable {
    /// References to a vmlinux global are found in kernel text, read through memory: a snapshot has none.
    case vmlinuxGlobalNeedsLiveKernel

    public var description: String {
        switch self {
        case .vmlinuxGlobalNeedsLiveKernel: return "references to vmlinux globals come from kernel text, which a snapshot doesn't have"
        }
    }
}

extension WhereAnalyzer {
    /// The places exposing the query's target. `memory` opens a kernel memory reader (only a vmlinux global
    /// needs one, and only on the live kernel).
    public func hits(for query: WhereQuery, memory: () throws -> KernelMemory) throws -> [WhereHit] {
        switch query {
        case .type(let target): return try whereType(target)
        case .moduleGlobal(let name): return try whereGlobal(name)
        case .vmlinuxGlobal(let name):
            guard case .live = kernel.source else { throw WhereQueryError.vmlinuxGlobalNeedsLiveKernel }
            return try whereVmlinuxGlobal(name, memory: try memory())
        }
    }

    /// The kprobes `where --trigger` attaches to confirm candidates: functions (parameter, return and
    /// reference hits) whose verdict is traceable, by exact name (a clone or a fentry-only function would make
    /// bpftrace refuse the whole set), each once, most direct first, at most `limit`.
    public static func triggerProbes(_ hits: [WhereHit], limit: Int) -> [String] {
        var specs: [String] = []
        for h in hits where [.parameter, .return, .reference].contains(h.kind) {
            guard h.verdict == .traceable else { continue }
            let spec = "kprobe:" + String(h.place.prefix { $0 != "+" })
            if !specs.contains(spec) { specs.append(spec) }
            if specs.count >= limit { break }
        }
        return specs
    }
}
