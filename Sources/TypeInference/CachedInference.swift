import BTF
import KernelSource
import KernelSymbols
import KreachSupport

/// Types of vmlinux globals inferred from the kernel's code, kept per kernel build (its GNU build-id, from
/// /sys/kernel/notes) in the type cache (`TypeCacheFormat`, `TypeCacheDirectory`): a global inferred once —
/// and every global its inference asked along the way — is read back on the next run without reading the
/// kernel image. A snapshot carries the cache of its kernel (`snapshotName`), read before the cache
/// directory's. A cache that is damaged, of another format, rules version or build, or that names types
/// this kernel's BTF doesn't have there, is ignored with a note; nothing is cached when the kernel's
/// build-id is unknown or `Kernel.typeCacheRoot` is nil (--no-cache).
public final class CachedInference {
    /// The cache file inside a snapshot directory.
    public static let snapshotName = "type-cache"

    public let kernel: Kernel
    public let imagePath: String?
    /// Notes for the user: a cache ignored or not written, and why.
    public private(set) var notes: [String] = []
    private var opened: Result<TypeInferrer, Error>?
    private var loaded = false
    private var entries: [String: TypeCacheEntry] = [:]
    private var origin: [String: String] = [:]
    private lazy var buildID: [UInt8]? = kernel.buildID()

    public init(kernel: Kernel, imagePath: String? = nil) {
        self.kernel = kernel
        self.imagePath = imagePath
    }

    private func note(_ text: String) { if !notes.contains(text) { notes.append(text) } }

    /// The inferrer over the kernel image, opened on first need (`TypeInferrer.open`).
    public func inferrer() throws -> TypeInferrer {
        if let opened { return try opened.get() }
        let result = Result { try TypeInferrer.open(kernel, imagePath: imagePath) }
        opened = result
        return try result.get()
    }

    /// The type of the vmlinux data symbol `name`: from the cache when it has it, else inferred (and cached).
    public func infer(named name: String) throws -> InferredType {
        let kallsyms = try kernel.symbols().kallsyms
        let symbol = try TypeInferrer.dataSymbol(named: name, in: kallsyms)
        let text = kallsyms.indexes(named: "_text", module: "vmlinux").first.map { kallsyms.address($0) }
        load()
        if let text, let e = entries[name], e.offset == symbol.address &- text, let hit = restore(e, symbol) { return hit }
        let inferrer = try inferrer()
        let result = inferrer.infer(try inferrer.dataSymbol(named: name))
        if let text { store(inferrer.inferredSoFar, text: text, btf: inferrer.btf) }
        return result
    }

    /// The cache entries of the kernel, read once: the snapshot's own file, then the cache directory's.
    private func load() {
        guard !loaded else { return }
        loaded = true
        guard let root = kernel.typeCacheRoot, let id = buildID else { return }
        if case .snapshot(let dir) = kernel.source, FileBytes.exists(dir + "/" + CachedInference.snapshotName) {
            let path = dir + "/" + CachedInference.snapshotName
            do {
                let bytes = try FileBytes.read(path, limit: TypeCacheFormat.fileLimit)
                merge(try TypeCacheFormat.decode(bytes, buildID: id, source: path), from: path)
            } catch let e as FileError {
                note("type cache \(path): \(e.reason); ignored")
            } catch {
                note("\(error); ignored")
            }
        }
        do {
            if let bytes = try TypeCacheDirectory.read(root: root, buildID: id) {
                let path = root + "/types/" + TypeCacheDirectory.fileName(id)
                merge(try TypeCacheFormat.decode(bytes, buildID: id, source: path), from: path)
            }
        } catch {
            note("\(error); ignored")
        }
    }

    private func merge(_ more: [String: TypeCacheEntry], from path: String) {
        for (name, e) in more where entries[name] == nil {
            entries[name] = e
            origin[name] = path
        }
    }

    /// A cached entry as an `InferredType`; nil (and the whole cache dropped) when its types are not
    /// what this kernel's BTF has under those ids.
    private func restore(_ e: TypeCacheEntry, _ symbol: TypeInferrer.DataSymbol) -> InferredType? {
        guard let btf = try? kernel.types().vmlinux else { return nil }
        let consistent = (e.type.map { btf.describe($0) == e.typeName } ?? true)
            && e.candidates.allSatisfy { btf.describe($0.type) == $0.typeName }
        guard consistent else {
            note("type cache \(origin[e.name] ?? "?"): \(e.name)'s types are not this kernel's BTF; ignored")
            entries = [:]
            return nil
        }
        var t = InferredType(name: symbol.name, address: symbol.address, extent: symbol.extent, type: e.type, note: e.note,
                             candidates: e.candidates.map { .init(type: $0.type, votes: $0.votes, sources: $0.sources) },
                             evidence: [])
        t.cachedIn = origin[e.name]
        return t
    }

    /// Adds `results` to the cache file (merged with what it holds now, another kreach may have written).
    private func store(_ results: [InferredType], text: UInt64, btf: BTF) {
        guard let root = kernel.typeCacheRoot else { return }
        guard let id = buildID else {
            note("inferred types are not cached: the kernel's build-id is unknown (no \(kernel.path(.notes)))")
            return
        }
        var all: [String: TypeCacheEntry] = [:]
        if let bytes = try? TypeCacheDirectory.read(root: root, buildID: id),
           let current = try? TypeCacheFormat.decode(bytes, buildID: id, source: root) {
            all = current
        }
        for r in results {
            all[r.name] = TypeCacheEntry(name: r.name, offset: r.address &- text, type: r.type, typeName: r.type.map { btf.describe($0) } ?? "",
                                         note: r.note, candidates: r.candidates.map {
                                             .init(type: $0.type, typeName: btf.describe($0.type), votes: $0.votes, sources: $0.sources)
                                         })
        }
        do { try TypeCacheDirectory.write(root: root, buildID: id, TypeCacheFormat.encode(buildID: id, entries: Array(all.values))) } catch {
            note("inferred types are not cached: \(error)")
        }
    }

    /// The cache file of the live kernel, checked, for `kreach snapshot` to carry; nil with the reason
    /// when there is none to carry.
    public static func liveCacheFile(_ kernel: Kernel) -> (bytes: [UInt8]?, note: String?) {
        guard let root = kernel.typeCacheRoot else { return (nil, nil) }
        guard let id = kernel.buildID() else { return (nil, "no type cache carried: the kernel's build-id is unknown (\(kernel.path(.notes)))") }
        do {
            guard let bytes = try TypeCacheDirectory.read(root: root, buildID: id) else {
                return (nil, "no type cache carried: no type of this kernel was inferred yet (\(root)/types/\(TypeCacheDirectory.fileName(id)))")
            }
            _ = try TypeCacheFormat.decode(bytes, buildID: id, source: root)
            return (bytes, nil)
        } catch {
            return (nil, "no type cache carried: \(error)")
        }
    }
}
