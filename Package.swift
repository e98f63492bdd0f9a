// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "kreach",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "kreach", targets: ["kreach"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.65.0"),
    ],
    targets: [
        // The only C: thin wrappers over libc/syscalls Swift can't call directly (GNU memmem, bpf()), and
        // in-process decompression (liblzma, libzstd, zlib: Debian liblzma-dev, libzstd-dev, zlib1g-dev).
        .target(name: "CKreach", linkerSettings: [.linkedLibrary("lzma"), .linkedLibrary("zstd"), .linkedLibrary("z"), .linkedLibrary("lzo2"), .linkedLibrary("snappy")]),
        // Capstone (Debian libcapstone-dev), flattened to what type inference needs: a C shim, no unions in Swift.
        .target(name: "CCapstone", linkerSettings: [.linkedLibrary("capstone")]),
        // libdw (Debian libdw-dev): a variable's type from DWARF, when a -dbg package or a .ko carries it.
        .target(name: "CDwarf", linkerSettings: [.linkedLibrary("dw"), .linkedLibrary("elf")]),
        // Byte files, JSON output, globs, shared error type. No kernel knowledge.
        .target(name: "KreachSupport", dependencies: ["CKreach"]),
        // BTF bytes -> types, C and JSON rendering. Deterministic: same bytes, same result.
        .target(name: "BTF", dependencies: ["CKreach", "KreachSupport"]),
        // The architecture seam: pointer size, byte order, ELF machine, address space, relocation types,
        // text-reference decoding. One file per architecture (x86-64 today).
        .target(name: "Arch", dependencies: ["KreachSupport"]),
        // /proc/kallsyms, /proc/modules, module sections. Knows nothing of BTF.
        .target(name: "KernelSymbols", dependencies: ["KreachSupport"]),
        // The BPF instruction builder and bpf() errors. No kernel memory reading (that is Memory).
        .target(name: "BPF", dependencies: ["CKreach", "KreachSupport"]),
        // Every reader of kernel memory behind `KernelMemory`: BPF (test-run of a raw_tracepoint program),
        // /proc/kcore, none (a snapshot); the choice between them.
        .target(name: "Memory", dependencies: ["Arch", "BPF", "CKreach", "KernelSymbols", "KreachSupport"]),
        // The kernel being looked at: live (/proc, /sys) or a snapshot directory; capture.
        .target(name: "KernelSource", dependencies: ["Arch", "KreachSupport", "BTF", "KernelSymbols"]),
        // Typed objects: expressions, symbol typing, formatting, container walks.
        .target(name: "KernelObject", dependencies: ["Memory", "BTF", "KernelSymbols", "KernelSource", "KreachSupport", "TypeInference"]),
        // bpftrace: scripts that name kernel globals, generation, running, getter capture.
        .target(name: "ScriptGen", dependencies: ["BTF", "KernelObject", "KernelSource", "KernelSymbols", "KreachSupport"]),
        // Discovery: where data is exposed, whether functions can be probed.
        .target(name: "Probing", dependencies: ["Arch", "Memory", "BTF", "CKreach", "KernelSource", "KernelSymbols", "KreachSupport"]),
        // Types of globals without debuginfo, inferred from the kernel's code (disassembly of the image on disk
        // and of kernel text) and data, checked against BTF.
        .target(name: "TypeInference", dependencies: ["Arch", "BTF", "CCapstone", "CDwarf", "KernelSource", "KernelSymbols", "KreachSupport"]),
        // `kreach export`: a Prometheus exporter of config expressions (YAML config, text format, HTTP).
        .target(name: "Exporter", dependencies: [
            "KernelObject", "KernelSource", "KernelSymbols", "Memory", "KreachSupport",
            .product(name: "Yams", package: "Yams"),
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ]),
        .executableTarget(
            name: "kreach",
            dependencies: [
                "KreachSupport", "BTF", "KernelSymbols", "KernelSource", "Memory", "KernelObject", "ScriptGen", "Probing", "Exporter", "TypeInference",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),
        // In-process benchmarks (Benchmarks/run compares them with libbpf and cat).
        .executableTarget(name: "kreach-bench", dependencies: ["KreachSupport", "BTF", "Memory", "KernelSymbols", "KernelSource", "KernelObject", "Exporter", "TypeInference"]),
        // libFuzzer harnesses (Tests/fuzz/run builds them with -sanitize=fuzzer); a normal build replays inputs.
        .executableTarget(name: "kreach-fuzz", dependencies: ["Memory", "BTF", "KernelObject", "KernelSource", "KernelSymbols", "KreachSupport", "Probing", "ScriptGen", "TypeInference"],
                          path: "Sources/KreachFuzz"),
        // Test helpers: the unpacked Debian capture, running commands, oracles.
        .target(name: "KreachTestSupport", dependencies: ["Arch", "KreachSupport"], path: "Tests/Support"),
        .testTarget(name: "BTFTests", dependencies: ["BTF", "KreachSupport", "KernelSource", "KreachTestSupport"]),
        .testTarget(name: "KernelSymbolsTests", dependencies: ["KernelSymbols", "KreachSupport", "KernelSource", "KreachTestSupport"]),
        .testTarget(name: "KernelSourceTests", dependencies: ["KernelSource", "BTF", "KreachSupport", "KreachTestSupport"]),
        .testTarget(name: "BPFTests", dependencies: ["BPF", "Memory", "BTF", "KernelSource", "KreachSupport", "KreachTestSupport"]),
        .testTarget(name: "KernelObjectTests", dependencies: ["KernelObject", "Memory", "KernelSource", "KreachSupport", "KreachTestSupport"]),
        .testTarget(name: "ScriptGenTests", dependencies: ["ScriptGen", "KernelObject", "Memory", "KernelSource", "KreachTestSupport"]),
        .testTarget(name: "ProbingTests", dependencies: ["Arch", "Probing", "Memory", "KernelSource", "KernelSymbols", "KreachSupport", "KreachTestSupport"]),
        .testTarget(name: "KreachSupportTests", dependencies: ["KreachSupport"]),
        .testTarget(name: "ArchTests", dependencies: ["Arch", "KernelSymbols", "KernelSource", "BTF", "KreachSupport", "KreachTestSupport"]),
        .testTarget(name: "VMCoreTests", dependencies: ["Arch", "Memory", "KreachSupport", "KreachTestSupport"]),
        .testTarget(name: "ExporterTests", dependencies: ["Exporter", "KernelSource", "Memory", "KreachSupport", "KreachTestSupport"]),
        .testTarget(name: "TypeInferenceTests", dependencies: ["TypeInference", "BTF", "KernelSource", "KernelSymbols", "KreachSupport", "KreachTestSupport"]),
        .testTarget(name: "CLITests", dependencies: ["KernelSource", "KreachSupport", "KreachTestSupport", "TypeInference"]),
    ]
)
