import BTF
import Glibc
import KernelSource
import KernelSymbols
import KreachSupport
import TypeInference

/// CPU time of this process so far, in microseconds.
func cpuMicroseconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) * 1e6 + Double(ts.tv_nsec) / 1e3
}

/// Type inference on a snapshot and its kernel image: timings (CPU) and the score against the oracle.
func benchTypes(snapshot: String, image imagePath: String, table: String, global: String) throws {
    let kernel = try Kernel(source: .snapshot(snapshot))
    let t0 = cpuMicroseconds()
    let kallsyms = try kernel.symbols().kallsyms
    let btf = try kernel.types().vmlinux
    let t1 = cpuMicroseconds()
    let image = try KernelImage(path: imagePath)
    let t2 = cpuMicroseconds()
    let one = try TypeInferrer(image: image, kallsyms: kallsyms, btf: btf)
    let symbol = try one.dataSymbol(named: global)
    let result = one.infer(symbol)
    let t3 = cpuMicroseconds()
    print("types_kallsyms_btf_us \(Int(t1 - t0))")
    print("types_image_decompress_us \(Int(t2 - t1))")
    print("types_one_global_cold_us \(Int(t3 - t2)) (\(global): \(result.type.map { InferenceScore.resolvedName(btf, $0) } ?? "none"))")
    let all = try TypeInferrer(image: image, kallsyms: kallsyms, btf: btf)
    let t4 = cpuMicroseconds()
    let results = all.inferAll()
    let t5 = cpuMicroseconds()
    print("types_every_global_us \(Int(t5 - t4)) (\(results.filter { $0.type != nil }.count) typed of \(results.count) with evidence)")
    let text = try ByteBuffer.readDecompressing(table, limit: FileLimit("oracle table", bytes: 256 << 20))
    let oracle = try OracleTable(text: String(decoding: text.bytes, as: UTF8.self))
    let score = InferenceScore(results: results, all: all.dataSymbols(), oracle: oracle, btf: btf, slide: all.slide)
    print(score.description, terminator: "")
    if getenv("KREACH_BENCH_WRONG") != nil {
        for (name, inferred, truth, note) in score.wrong { print("wrong\t\(name)\t\(inferred)\t\(truth)\t\(note)") }
        for (name, inferred, truth) in score.inexact { print("inexact\t\(name)\t\(inferred)\t\(truth)") }
        for (name, truth, note) in score.missed { print("missed\t\(name)\t\(note)\t\(truth)") }
    }
}
