import Glibc
import KreachSupport

/// The target and capture, chosen once per process.
nonisolated(unsafe) var selected: (target: FuzzTarget, context: FuzzContext?)?

/// Picks the target (KREACH_FUZZ_TARGET) and loads the capture (KREACH_FUZZ_KERNEL) when it needs one.
/// Exits with a one-line error when either is missing or bad.
func select(_ name: String?) -> (FuzzTarget, FuzzContext?) {
    let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
    guard let name, let target = FuzzTarget(rawValue: name) else {
        fail("kreach-fuzz: set KREACH_FUZZ_TARGET (or give a target) to one of: \(names)")
    }
    guard target.needsCapture else { return (target, nil) }
    guard let dir = getenv("KREACH_FUZZ_KERNEL").map({ String(cString: $0) }) else {
        fail("kreach-fuzz: target \(name) needs KREACH_FUZZ_KERNEL=DIR (the unpacked Debian capture)")
    }
    do {
        return (target, try FuzzContext(directory: dir))
    } catch {
        fail("kreach-fuzz: can't load the capture \(dir): \(error)")
    }
}

/// One line on standard error.
func printError(_ message: String) {
    let line = Array((message + "\n").utf8)
    _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}

func fail(_ message: String) -> Never {
    printError(message)
    exit(2)
}

/// libFuzzer: called once before fuzzing.
@_cdecl("LLVMFuzzerInitialize")
public func fuzzerInitialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    selected = select(getenv("KREACH_FUZZ_TARGET").map { String(cString: $0) })
    return 0
}

/// libFuzzer: one input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard let (target, context) = selected else { return 0 }
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    target.run(bytes, context)
    return 0
}

/// Without the fuzzer (a normal build): `kreach-fuzz TARGET FILE|DIR…` runs the harness once on each
/// input file (a crash reproduces as a crash), then prints how many ran.
func replay(_ arguments: [String]) -> Int32 {
    guard arguments.count >= 3 else {
        printError("usage: kreach-fuzz TARGET FILE|DIR... (targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")))")
        return 2
    }
    let (target, context) = select(arguments[1])
    var files: [String] = []
    for path in arguments.dropFirst(2) {
        if FileBytes.isDirectory(path) {
            let names = (try? FileBytes.list(path)) ?? []
            files += names.sorted().map { path + "/" + $0 }
        } else {
            files.append(path)
        }
    }
    for file in files {
        do {
            target.run(try FileBytes.read(file), context)
        } catch {
            printError("kreach-fuzz: \(file): \(error)")
            return 1
        }
    }
    print("kreach-fuzz \(target.rawValue): \(files.count) inputs ran")
    return 0
}
