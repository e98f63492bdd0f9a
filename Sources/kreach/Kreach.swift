import ArgumentParser
import Glibc
import KreachSupport

/// kreach: reach kernel globals, in vmlinux and in modules, with no debuginfo.
@main
struct Kreach: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kreach",
        abstract: "Reach kernel state that tracing tools can't: symbols and BTF types of vmlinux and modules.",
        discussion: """
            Exit status: 0 found, 1 not found, ambiguous or failed (message on stderr), 2 usage error.
            Every read-only command takes --kernel DIR to work on a snapshot made by `kreach snapshot DIR`.
            """,
        version: "0.1.0",
        subcommands: [Sym.self, TypeCommand.self, Show.self, Watch.self, Gen.self, RunScript.self, Capture.self, Where.self, Why.self, Snapshot.self, Export.self])

    /// Maps errors to kreach's exit codes: library errors 1, usage errors 2.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let failure as Failure {
            if !failure.message.isEmpty { StandardError.write("kreach: " + failure.message) }
            Glibc.exit(failure.code)
        } catch {
            let code = exitCode(for: error)
            if code == .success {  // --help, --version
                print(fullMessage(for: error))
                Glibc.exit(0)
            }
            if code == .validationFailure {  // bad arguments: the message with usage
                StandardError.write(fullMessage(for: error))
                Glibc.exit(2)
            }
            StandardError.write("kreach: \(error)")
            Glibc.exit(1)
        }
    }
}

/// A command's failure with the exit code it maps to; the message was or will be printed once.
struct Failure: Error {
    let message: String
    let code: Int32
    static func notFound(_ message: String) -> Failure { Failure(message: message, code: 1) }
}
