import Foundation

extension DebianCapture {
    /// A private copy of the capture with the BTF of `modules` removed, as a module built out of tree
    /// (DKMS) has none. Each call makes a new directory under the temporary directory.
    public static func copy(withoutBTFOf modules: [String]) throws -> String {
        let source = try directory()
        let dir = NSTemporaryDirectory() + "kreach-nobtf-\(getpid())-\(UUID().uuidString)"
        let result = try Run.command(["cp", "-a", source, dir])
        guard result.status == 0 else { throw FixtureError("copying \(source) to \(dir) failed: \(result.stderr)") }
        for m in modules { try FileManager.default.removeItem(atPath: dir + "/btf/" + m) }
        try? FileManager.default.removeItem(atPath: dir + "/.complete")
        return dir
    }
}
