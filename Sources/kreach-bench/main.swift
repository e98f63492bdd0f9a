import Memory
import BTF
import Exporter
import Foundation
import Glibc
import KernelObject
import KernelSource
import KernelSymbols
import KreachSupport
import TypeInference

// In-process timings for Benchmarks/run. Each mode prints `NAME_median_us VALUE` lines.
//   kreach-bench btf FILE [N]        read + parse + name index of a BTF file (compare: libbpf btf__parse)
//   kreach-bench kallsyms FILE [N]   read alone, then load (read + parse + index), alternating in one loop
//   kreach-bench kallsyms-once FILE  one load + index + lookup (for process-level timing with hyperfine)
//   kreach-bench walk-hash COUNT [N]  hash_for_each over the TCP ehash with COUNT loopback connections open
//   kreach-bench walk-pages FILE [N]  xa_for_each over FILE's page cache, index and mapping of each folio:
//                                    entries/s median with nodes read ahead and fields copied in batches, and
//                                    with a read per node and per field (--walk user); BPF runs of each
//   kreach-bench duplicates COUNT [N]  one name COUNT times: load+index, NAME#COUNT, every match, name set
//   kreach-bench walk-core DUMP [N] [FSTYPE]  a vmcore: metadata from the dump, then the task list walked N times
//                                    (pid of each): entries/s median (compare: drgn on the same dump); with
//                                    FSTYPE also the s_inodes list of the first FSTYPE superblock (i_ino of each)
//   kreach-bench types SNAPSHOT IMAGE TABLE [GLOBAL]  type inference: image read, one global cold, every
//                                    global, scored against the DWARF oracle table (Benchmarks/types)

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) * 1e6 + Double(ts.tv_nsec) / 1e3
}

/// This process's CPU time (user + system), µs: a rate steadier than wall time on a busy host.
func cpuNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) * 1e6 + Double(ts.tv_nsec) / 1e3
}

func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }

let args = CommandLine.arguments
guard args.count >= 3 else {
    StandardError.write("usage: kreach-bench btf|kallsyms|kallsyms-once FILE [ITERATIONS]")
    exit(2)
}
let path = args[2]
let n = args.count > 3 ? max(1, Int(args[3]) ?? 30) : 30

do {
    switch args[1] {
    case "btf":
        // Open + index, then the first lookup by name (struct task_struct), timed separately.
        var times: [Double] = [], withLookup: [Double] = []
        var found = 0
        for _ in 0..<n {
            let t0 = now()
            let btf = try BTF(path: path, name: "vmlinux")
            let t1 = now()
            found = try btf.lookup("task_struct").filter { try btf.kind(of: $0) == .structure }.count
            let t2 = now()
            times.append(t1 - t0)
            withLookup.append(t2 - t0)
        }
        StandardError.write("kreach: struct task_struct -> \(found) types")
        print("kreach_btf_parse_index_median_us \(median(times))")
        print("kreach_btf_parse_lookup_median_us \(median(withLookup))")
    case "kallsyms":
        var load: [Double] = [], read: [Double] = []
        for _ in 0..<n {
            let t0 = now()
            let bytes = try ByteBuffer.read(path)
            let t1 = now()
            let k = try Kallsyms(path: path)
            let t2 = now()
            read.append(t1 - t0)
            load.append(t2 - t1)
            if k.count == 0 || bytes.count == 0 { StandardError.write("empty kallsyms") }
        }
        print("read_only_median_us \(median(read))")
        print("kreach_load_index_median_us \(median(load))")
    case "btf-read":
        var times: [Double] = []
        for _ in 0..<n {
            let t0 = now()
            let b = try ByteBuffer.read(path)
            times.append(now() - t0)
            if b.count == 0 { exit(1) }
        }
        print("read_only_median_us \(median(times))")
    case "walk":
        // Task-list walk through BPF reads: entries per second, evaluation only (process start excluded).
        let ev = try Evaluator(kernel: try Kernel(source: .live), memory: try BPFMemory())
        let fmt = ObjectFormatter(evaluator: ev)
        var rates: [Double] = []
        var count = 0
        for _ in 0..<n {
            let t0 = now()
            guard case .entries(let entries, _) = try ev.evaluate("list_for_each_entry(struct task_struct, &current->tasks, tasks)") else { exit(1) }
            for e in entries { _ = try fmt.compact(try ev.evaluate(field: "pid", of: e)) }
            let dt = now() - t0
            count = entries.count
            rates.append(Double(entries.count) / (dt / 1e6))
        }
        print("walk_entries \(count)")
        print("walk_entries_per_second_median \(Int(median(rates)))")
    case "export":
        // One exporter scrape of COUNT metrics (current->FIELD, cycling over scalar fields) through one
        // loaded BPF program: the scrape's median and the per-metric cost.
        let count = Int(path) ?? 100
        let fields = ["pid", "tgid", "prio", "static_prio", "normal_prio", "rt_priority", "flags", "on_cpu", "exit_code", "policy"]
        var yaml = "metrics:\n"
        for i in 0..<count {
            yaml += "  - {name: m\(i), help: h, type: gauge, expr: \"current->\(fields[i % fields.count])\"}\n"
        }
        let collector = Collector(config: try ExporterConfig(yaml: yaml, file: "bench"), memory: try BPFMemory())
        _ = collector.collect()  // first scrape resolves: timed apart
        var times: [Double] = []
        for _ in 0..<n {
            let t0 = now()
            let families = collector.collect()
            times.append(now() - t0)
            guard families.filter({ !$0.samples.isEmpty }).count == count + 5 else {
                StandardError.write("kreach-bench: a metric failed: \(collector.lastErrors)")
                exit(1)
            }
        }
        print("export_metrics \(count)")
        print("export_scrape_median_us \(Int(median(times)))")
        print("export_per_metric_median_us \(String(format: "%.1f", median(times) / Double(count)))")
    case "walk-core":
        let core = try VMCoreMemory(path: path)
        var template = Array((NSTemporaryDirectory() + "kreach-bench-core.XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw SystemError("create a directory in", NSTemporaryDirectory(), errno: errno) }
        let dir = String(cString: made)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let t0 = now()
        _ = try DumpMetadata.write(from: core, into: try PrivateDirectory(creating: dir))
        let ev = try Evaluator(kernel: try Kernel(source: .snapshot(dir)), memory: core)
        ev.walkFields = ["pid"]
        ev.maxEntries = 10_000_000
        let expr = "list_for_each_entry(struct task_struct, &((struct task_struct)init_task).tasks, tasks)"
        let fmt = ObjectFormatter(evaluator: ev)
        var rates: [Double] = [], cpuRates: [Double] = [], count = 0
        for i in 0...n {
            let t1 = now(), c1 = cpuNow()
            guard case .entries(let entries, _) = try ev.evaluate(expr) else { exit(1) }
            for e in entries { _ = try fmt.compact(try ev.prefetchedField("pid", of: e) ?? ev.evaluate(field: "pid", of: e)) }
            if i == 0 { print("core_first_walk_ms \(String(format: "%.1f", (now() - t0) / 1000))"); continue }  // metadata, BTF, caches
            count = entries.count
            rates.append(Double(entries.count) / ((now() - t1) / 1e6))
            cpuRates.append(Double(entries.count) / ((cpuNow() - c1) / 1e6))
        }
        print("core_tasks \(count)")
        print("core_tasks_entries_per_second_median \(Int(median(rates)))")
        print("core_tasks_entries_per_cpu_second_median \(Int(median(cpuRates)))")
        if args.count > 4 {
            // A longer walk, the same as drgn-bench.py sb-inodes: the first FSTYPE superblock on super_blocks.
            func word(_ a: UInt64) throws -> UInt64 { try core.read(a, count: 8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } }
            guard case .entries(let sbs, _) = try ev.evaluate("list_for_each_entry(struct super_block, (struct list_head *)&super_blocks, s_list)"),
                  case .object(let probe) = try ev.evaluate("*(struct super_block *)0x100000000"),
                  let typeOffset = try ev.evaluate(field: "s_type", of: probe).address.map({ $0 - 0x1_0000_0000 }) else { exit(1) }
            let sb = try sbs.first { e in
                let name = try core.read(try word(try word((e.address ?? 0) + typeOffset)), count: args[4].utf8.count + 1)
                return name == Array(args[4].utf8) + [0]
            }
            guard let sbAddress = sb?.address else { StandardError.write("kreach-bench: no \(args[4]) superblock"); exit(1) }
            let inodes = "list_for_each_entry(struct inode, &((struct super_block *)\(Hex.short(sbAddress)))->s_inodes, i_sb_list)"
            ev.walkFields = ["i_ino"]
            var inodeRates: [Double] = [], inodeCPURates: [Double] = [], inodeCount = 0
            for i in 0...n {
                let t1 = now(), c1 = cpuNow()
                guard case .entries(let entries, _) = try ev.evaluate(inodes) else { exit(1) }
                for e in entries { _ = try fmt.compact(try ev.prefetchedField("i_ino", of: e) ?? ev.evaluate(field: "i_ino", of: e)) }
                if i == 0 { continue }
                inodeCount = entries.count
                inodeRates.append(Double(entries.count) / ((now() - t1) / 1e6))
                inodeCPURates.append(Double(entries.count) / ((cpuNow() - c1) / 1e6))
            }
            print("core_sb_inodes \(inodeCount)")
            print("core_sb_inodes_entries_per_second_median \(Int(median(inodeRates)))")
            print("core_sb_inodes_entries_per_cpu_second_median \(Int(median(inodeCPURates)))")
        }
    case "walk-inodes":
        // The inodes of the tmpfs at FILE (a directory): list_for_each_entry over sb->s_inodes (i_sb_list),
        // reaching the superblock from an open file's fd, i_ino and i_size of each, read (walk_kernel_unformatted)
        // and rendered into show --fields's lines (ShowRenderer, all but printing them); in-kernel walk (all entries)
        // vs per-entry reads (the first USER_MAX entries). Entries per second.
        let fd = open(path, O_RDONLY | O_DIRECTORY)
        guard fd >= 0 else { print("cannot open \(path)"); exit(1) }
        let userMax = args.count > 4 ? max(1, Int(args[4]) ?? 5000) : 5000
        let ev = try Evaluator(kernel: try Kernel(source: .live), memory: try BPFMemory())
        let fields = ["i_ino", "i_size"]
        let renderer = ShowRenderer(evaluator: ev, formatter: ObjectFormatter(evaluator: ev), fields: fields)
        let expr = "list_for_each_entry(struct inode, &current->files->fdt->fd[\(fd)]->f_inode->i_sb->s_inodes, i_sb_list)"
        func rate(_ mode: WalkMode, max: Int, format: Bool = true) throws -> (Int, Double) {
            ev.walkMode = mode
            ev.maxEntries = max
            ev.walkFields = fields
            let t0 = now()
            var count = 0
            if format {
                let r = renderer.render(expr)
                if let error = r.error { throw error }
                count = r.lines.count
            } else {
                guard case .entries(let entries, _) = try ev.evaluate(expr) else { exit(1) }
                // The fields' values in hand, as the in-kernel walk copied them.
                var sum: UInt64 = 0
                for k in entries.indices {
                    guard let values = ev.prefetchedValues(at: k) else { StandardError.write("kreach-bench: the walk copied no fields"); exit(1) }
                    for v in values { sum &+= v }
                }
                if sum == 0 { StandardError.write("kreach-bench: no field values") }
                count = entries.count
            }
            return (count, Double(count) / ((now() - t0) / 1e6))
        }
        var kernel: [Double] = [], user: [Double] = [], walkOnly: [Double] = []
        var kernelCount = 0, userCount = 0
        for _ in 0..<n {
            walkOnly.append(try rate(.kernel, max: 10_000_000, format: false).1)
            let (kc, kr) = try rate(.kernel, max: 10_000_000)
            let (uc, ur) = try rate(.user, max: userMax)
            kernelCount = kc; userCount = uc
            kernel.append(kr); user.append(ur)
        }
        // The engine alone: BPFListWalk's runs and map reads, node addresses and the two fields' bytes.
        guard case .object(let head) = try ev.evaluate("current->files->fdt->fd[\(fd)]->f_inode->i_sb->s_inodes"),
              let headAddress = head.address, case .object(let first) = try ev.evaluate("current->files->fdt->fd[\(fd)]->f_inode->i_sb->s_inodes.next"),
              case .object(let probe) = try ev.evaluate("*(struct inode *)0x100000000") else { exit(1) }
        let link = try ev.evaluate(field: "i_sb_list", of: probe).address ?? 0
        let offsets = try fields.map { BPFListWalk.Field(offset: Int32(truncatingIfNeeded: (try ev.evaluate(field: $0, of: probe).address ?? 0) &- link), size: 8) }
        let engine = try BPFListWalk(nextOffset: 0, fields: offsets)
        var engineRates: [Double] = []
        let firstNode = try ev.memory.read(first.address ?? 0, count: 8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        for _ in 0..<n {
            let t0 = now()
            let (visited, _) = try engine.walk(first: firstNode, head: headAddress, maxEntries: 10_000_000)
            engineRates.append(Double(visited.count) / ((now() - t0) / 1e6))
        }
        print("walk_engine_entries_per_second_median \(Int(median(engineRates)))")
        // Pages first touched (minor faults) by one more walk of each kind: under TCG a fault costs far more than
        // on hardware, so these say where a guest's time may go besides the walk.
        func faults(_ walk: () throws -> Void) rethrows -> Int {
            var before = rusage(), after = rusage()
            getrusage(RUSAGE_SELF.rawValue, &before)
            try walk()
            getrusage(RUSAGE_SELF.rawValue, &after)
            return after.ru_minflt - before.ru_minflt
        }
        print("walk_engine_minor_faults \(try faults { _ = try engine.walk(first: firstNode, head: headAddress, maxEntries: 10_000_000) })")
        print("walk_kernel_unformatted_minor_faults \(try faults { _ = try rate(.kernel, max: 10_000_000, format: false) })")
        print("walk_kernel_minor_faults \(try faults { _ = try rate(.kernel, max: 10_000_000) })")
        print("walk_kernel_entries \(kernelCount)")
        print("walk_kernel_entries_per_second_median \(Int(median(kernel)))")
        print("walk_kernel_unformatted_entries_per_second_median \(Int(median(walkOnly)))")
        print("walk_user_entries \(userCount)")
        print("walk_user_entries_per_second_median \(Int(median(user)))")
    case "walk-pages":
        // The page cache of FILE (its pages resident: a tmpfs file): xa_for_each over f_mapping->i_pages, each
        // folio's index and mapping taken, in batches (a node's children read at once, the fields copied after
        // the walk: the default) and per read (--walk user: a read per node, then per field). Entries per second.
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { print("cannot open \(path)"); exit(1) }
        let memory = try BPFMemory()
        let ev = try Evaluator(kernel: try Kernel(source: .live), memory: memory)
        guard case .object(let folioProbe) = try ev.evaluate("*(struct folio *)0x100000000") else { exit(1) }
        let folio = (try? ev.evaluate(field: "index", of: folioProbe)) != nil ? "struct folio" : "struct page"
        let expr = "xa_for_each(\(folio), &current->files->fdt->fd[\(fd)]->f_mapping->i_pages)"
        let fields = ["index", "mapping"]
        ev.walkFields = fields
        ev.maxEntries = 10_000_000
        func rate(_ mode: WalkMode) throws -> (count: Int, rate: Double, runs: Int) {
            ev.walkMode = mode
            let runs = memory.runs
            let t0 = now()
            guard case .entries(let entries, _) = try ev.evaluate(expr) else { exit(1) }
            var sum: UInt64 = 0
            for (k, e) in entries.enumerated() {
                if let values = ev.prefetchedValues(at: k) {
                    for v in values { sum &+= v }
                } else {
                    for f in fields {
                        let o = try ev.evaluate(field: f, of: e)
                        let bytes = try o.bytes ?? ev.memory.read(o.address ?? 0, count: (try? o.type.size()) ?? 8)
                        sum &+= UInt64(bytes.first ?? 0)
                    }
                }
            }
            if sum == 0 { StandardError.write("kreach-bench: no field values") }
            return (entries.count, Double(entries.count) / ((now() - t0) / 1e6), memory.runs - runs)
        }
        var batched: [Double] = [], single: [Double] = []
        var last = (0, 0, 0)
        for _ in 0..<n {
            let b = try rate(.auto), u = try rate(.user)
            batched.append(b.rate)
            single.append(u.rate)
            last = (b.count, b.runs, u.runs)
        }
        print("walk_pages_entries \(last.0)")
        print("walk_pages_batched_runs \(last.1)")
        print("walk_pages_batched_entries_per_second_median \(Int(median(batched)))")
        print("walk_pages_per_read_runs \(last.2)")
        print("walk_pages_per_read_entries_per_second_median \(Int(median(single)))")
    case "walk-hash":
        // hash_for_each over this netns's TCP ehash (hlist_nulls buckets) after opening FILE (a count) loopback
        // connections: buckets and entries per second, in the kernel and with per-entry reads, skc_num and
        // skc_dport of each formatted as show --fields does.
        let count = Int(path) ?? 1000
        var limit = rlimit(rlim_cur: rlim_t(4 * count + 64), rlim_max: rlim_t(4 * count + 64))
        _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        func loopback(_ port: UInt16) -> sockaddr_in {
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
            a.sin_port = port.bigEndian
            return a
        }
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = loopback(0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) { a in
            a.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) == 0 && listen(listener, 4096) == 0 && getsockname(listener, $0, &length) == 0 }
        }
        guard listener >= 0, ok else { print("cannot listen on 127.0.0.1"); exit(1) }
        for _ in 0..<count {
            let c = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var to = address
            let r = withUnsafePointer(to: &to) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(c, $0, length) } }
            guard c >= 0, r == 0, accept(listener, nil, nil) >= 0 else { print("connection failed: errno \(errno)"); exit(1) }
        }
        let ev = try Evaluator(kernel: try Kernel(source: .live), memory: try BPFMemory())
        let fmt = ObjectFormatter(evaluator: ev)
        let fields = ["skc_num", "skc_dport"]
        ev.walkFields = fields
        let hashinfo = "current->nsproxy->net_ns->ipv4.tcp_death_row.hashinfo"
        guard case .object(let mask) = try ev.evaluate("\(hashinfo)->ehash_mask"), let buckets = UInt64(try fmt.compact(mask)).map({ $0 + 1 }) else { exit(1) }
        let expr = "hash_for_each(struct sock_common, (struct hlist_nulls_head *)\(hashinfo)->ehash, skc_nulls_node, \(buckets))"
        func run(_ mode: WalkMode) throws -> (Int, Double) {
            ev.walkMode = mode
            let t0 = now()
            guard case .entries(let entries, _) = try ev.evaluate(expr) else { exit(1) }
            for e in entries { for f in fields { _ = try fmt.compact(try ev.prefetchedField(f, of: e) ?? ev.evaluate(field: f, of: e)) } }
            return (entries.count, now() - t0)
        }
        _ = try run(.kernel)  // the walk program is loaded once: timed apart
        var kernel: [Double] = [], user: [Double] = []
        var entries = 0
        for _ in 0..<n {
            let (k, kt) = try run(.kernel)
            let (_, ut) = try run(.user)
            entries = k
            kernel.append(kt); user.append(ut)
        }
        print("walk_hash_buckets \(buckets)")
        print("walk_hash_entries \(entries)")
        print("walk_hash_kernel_median_us \(Int(median(kernel)))")
        print("walk_hash_user_median_us \(Int(median(user)))")
        print("walk_hash_kernel_entries_per_second_median \(Int(Double(entries) / (median(kernel) / 1e6)))")
        print("walk_hash_user_entries_per_second_median \(Int(Double(entries) / (median(user) / 1e6)))")
        print("walk_hash_kernel_buckets_per_second_median \(Int(Double(buckets) / (median(kernel) / 1e6)))")
    case "duplicates":
        // One name listed FILE (a count) times in kallsyms and available_filter_functions: load and index,
        // resolve the last `#N`, list every match with its ordinal, build the name set. Linear: see DuplicateCLITests.
        let count = Int(path) ?? 100_000
        var text = "ffffffff81000000 T _stext\n"
        for k in 0..<count { text += Hex.address(0xffff_ffff_b900_0000 + UInt64(k) * 16) + " t many_dups\n" }
        let bytes = Array(text.utf8)
        let list = Array(String(repeating: "many_dups\n", count: count).utf8)
        var load: [Double] = [], pick: [Double] = [], all: [Double] = [], names: [Double] = []
        for _ in 0..<n {
            let t0 = now()
            let table = SymbolTable(kallsyms: try Kallsyms(buffer: ByteBuffer(bytes), source: "synthetic"), modules: [])
            let t1 = now()
            let last = try table.resolve("many_dups#\(count)")
            let t2 = now()
            let every = table.find(.name(module: nil, name: "many_dups", ordinal: nil, address: nil))
            let t3 = now()
            let set = NameSet(buffer: ByteBuffer(list)) { _, length in (0, length) }
            let t4 = now()
            guard last.ordinal == count, every.count == count, every.last?.ordinal == count, set.contains("many_dups") else { exit(1) }
            load.append(t1 - t0); pick.append(t2 - t1); all.append(t3 - t2); names.append(t4 - t3)
        }
        print("duplicates \(count)")
        print("load_index_median_us \(median(load))")
        print("resolve_last_ordinal_median_us \(median(pick))")
        print("find_all_with_ordinals_median_us \(median(all))")
        print("name_set_median_us \(median(names))")
    case "types":
        guard args.count >= 5 else { StandardError.write("usage: kreach-bench types SNAPSHOT IMAGE TABLE [GLOBAL]"); exit(2) }
        try benchTypes(snapshot: path, image: args[3], table: args[4], global: args.count > 5 ? args[5] : "init_task")
    case "kallsyms-once":
        let k = try Kallsyms(path: path)
        if k.indexes(named: "_stext").isEmpty { exit(1) }
    default:
        StandardError.write("unknown mode \(args[1])")
        exit(2)
    }
} catch {
    StandardError.write("kreach-bench: \(error)")
    exit(1)
}
