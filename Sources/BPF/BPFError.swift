import Glibc

/// A failed bpf() operation, with the errno and what kreach was doing.
public struct BPFError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let errno: Int32
    public let detail: String

    public init(_ operation: String, errno: Int32, detail: String = "") {
        self.operation = operation
        self.errno = errno
        self.detail = detail
    }

    public var description: String {
        var text = "\(operation): \(String(cString: strerror(errno)))"
        switch errno {
        case EPERM, EACCES:
            text += " (needs root, or CAP_BPF + CAP_PERFMON; kernel.unprivileged_bpf_disabled and lockdown=confidentiality also refuse it)"
        case ENOSYS:
            text += " (this kernel has no bpf() syscall: CONFIG_BPF_SYSCALL is off)"
        default: break
        }
        if !detail.isEmpty { text += ": " + detail }
        return text
    }
}
