import Glibc

/// libFuzzer's driver (libclang_rt.fuzzer): parses its flags from argv and calls `callback` per input.
#if KREACH_FUZZ
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt
#endif

/// Built with -DKREACH_FUZZ -sanitize=fuzzer (Tests/fuzz/run), main hands over to libFuzzer, which calls
/// the entry points in Entry.swift; in the normal build it replays input files (`kreach-fuzz TARGET FILE…`).
@main
struct FuzzMain {
    static func main() {
        #if KREACH_FUZZ
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzerTestOneInput))
        #else
        exit(replay(CommandLine.arguments))
        #endif
    }
}
