import BTF
import KernelSource
import KernelSymbols
import KreachSupport

/// Types of a loaded module's globals inferred from its .ko (`ModuleTypeInferrer`), kept in the type
/// cache under the module's own GNU build-id (the .ko's `.note.gnu.build-id`, which
/// /sys/module/M/notes/.note.gnu.build-id shows for the loaded module: `Kernel.moduleObject` checks they
/// are equal): one file per module build, entries at their offset in their section. Like
/// `CachedInference`, a cache that is damaged or names types this BTF doesn't have is ignored with a note.
public final class CachedModuleInference {
    public let kernel: Kernel
    /// Notes for the user: a cache ignored or not written, and why.
    public private(set) var notes: [String] = []
    private var inferrers: [String: ModuleTypeInferrer] = [:]

    public init(kernel: Kernel) { self.kernel = kernel }

    private func note(_ text: String) { if !notes.contains(text) { notes.append(text) } }

    /// The BTF a module's types are read in: its split BTF (/sys/kernel/btf/M), else vmlinux's.
    public func btf(of module: String) throws -> BTF {
        let types = try kernel.types()
        return types.moduleNames.contains(module) ? try types.module(module) : types.vmlinux
    }

    /// The inferrer over the loaded module's .ko.
    public func inferrer(_ object: ModuleObject) throws -> ModuleTypeInferrer {
        if let known = inferrers[object.module] { return known }
        let i = try ModuleTypeInferrer(module: object.module, elf: object.elf, btf: try btf(of: object.module), loadBases: object.sectionBases)
        inferrers[object.module] = i
        return i
    }

    /// The type of the module global `name`: from the cache when it has it, else inferred (every global of
    /// the module at once, all cached).
    public func infer(_ object: ModuleObject, named name: String) throws -> InferredType {
        let btf = try btf(of: object.module)
        let symbols = object.symbols.filter { $0.name == name && $0.type == 1 && $0.section != 0 }
        let id = object.elf.buildID
        if let id, symbols.count == 1, let root = kernel.typeCacheRoot {
            do {
                if let bytes = try TypeCacheDirectory.read(root: root, buildID: id),
                   let e = try TypeCacheFormat.decode(bytes, buildID: id, source: root)[name], e.offset == symbols[0].value {
                    let consistent = (e.type.map { btf.describe($0) == e.typeName } ?? true)
                        && e.candidates.allSatisfy { btf.describe($0.type) == $0.typeName }
                    if consistent, let found = object.objects(named: name).first {
                        var t = InferredType(name: name, address: found.address, extent: symbols[0].size, type: e.type, note: e.note,
                                             candidates: e.candidates.map { .init(type: $0.type, votes: $0.votes, sources: $0.sources) },
                                             evidence: [])
                        t.cachedIn = root + "/types/" + TypeCacheDirectory.fileName(id)
                        return t
                    }
                    note("type cache of \(object.module): \(name)'s types are not this module's BTF; ignored")
                }
            } catch {
                note("\(error); ignored")
            }
        }
        let inferrer = try inferrer(object)
        let result = try inferrer.infer(named: name)
        store(inferrer, object)
        return result
    }

    /// Writes every global the module's inference typed to its cache file.
    private func store(_ inferrer: ModuleTypeInferrer, _ object: ModuleObject) {
        guard let root = kernel.typeCacheRoot else { return }
        guard let id = object.elf.buildID else {
            note("inferred types of \(object.module) are not cached: its .ko has no build-id")
            return
        }
        let btf = inferrer.btf
        var entries: [TypeCacheEntry] = []
        for (name, r) in inferrer.inferAll() {
            guard let s = object.symbols.first(where: { $0.name == name && $0.type == 1 && $0.section != 0 }) else { continue }
            entries.append(TypeCacheEntry(name: name, offset: s.value, type: r.type, typeName: r.type.map { btf.describe($0) } ?? "",
                                          note: r.note, candidates: r.candidates.map {
                                              .init(type: $0.type, typeName: btf.describe($0.type), votes: $0.votes, sources: $0.sources)
                                          }))
        }
        do { _ = try TypeCacheDirectory.write(root: root, buildID: id, TypeCacheFormat.encode(buildID: id, entries: entries)) } catch {
            note("inferred types of \(object.module) are not cached: \(error)")
        }
    }
}
