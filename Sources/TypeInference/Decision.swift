import BTF

/// Combines a global's evidence into one type, or none with ranked candidates.
///
/// - Candidates are what evidence at offset 0 says the global is: the pointee of a parameter its address
///   is passed as, the type of a parameter its value is passed as, the return type of a function whose
///   result is stored in it. Candidates larger than the extent are dropped (they would overrun the next
///   symbol).
/// - The candidates agree when one of them contains every other at offset 0 (a wrapper whose first member
///   is what the code passes: `spinlock_t` around `raw_spinlock_t`): the outermost wins. Integers of one
///   size that differ only in sign agree; the most voted wins.
/// - Evidence inside the global (its address plus an offset passed as a typed pointer) must find a member
///   of that type at that offset of the winner, or nothing is chosen.
/// - Without candidates, plain loads and stores that all have one width, at offset 0 only, make it an
///   integer of that width, signed when a load sign-extends it.
struct TypeDecision {
    static let maxDepth = 16

    let btf: BTF
    private(set) var type: TypeID?
    private(set) var note = "no evidence"
    private(set) var candidates: [InferredType.Candidate] = []

    init(btf: BTF, extent: UInt64?, evidence: [Evidence]) {
        self.btf = btf
        // Group offset-0 typed evidence by the resolved type.
        struct Group { var display: [TypeID: Int] = [:]; var votes = 0; var sources: [String] = [] }
        var groups: [TypeID: Group] = [:]
        var order: [TypeID] = []
        for e in evidence where e.offset == 0 {
            let (t, source): (TypeID, String)
            switch e.kind {
            case let .addressArgument(f, p, pointee): (t, source) = (pointee, "address passed to \(f)() as parameter \(p + 1)")
            case let .valueArgument(f, p, type): (t, source) = (type, "value passed to \(f)() as parameter \(p + 1)")
            case let .returnedValue(f, type): (t, source) = (type, "holds what \(f)() returns")
            case let .storedIn(holder, at, type): (t, source) = (type, "its address is the initial \(holder)+\(at)")
            case .access: continue
            }
            guard let r = try? btf.resolve(t) else { continue }
            if groups[r] == nil { order.append(r) }
            groups[r, default: Group()].votes += 1
            groups[r, default: Group()].display[t, default: 0] += 1
            if groups[r, default: Group()].sources.count < 8 { groups[r, default: Group()].sources.append(source) }
        }
        let accesses: [(width: Int, signed: Bool?, locked: Bool)] = evidence.compactMap {
            if case let .access(w, s, indexed, locked) = $0.kind, $0.offset == 0, !indexed { return (w, s, locked) }
            return nil
        }
        let ranked = order.sorted { groups[$0]!.votes > groups[$1]!.votes }
        func display(_ r: TypeID) -> TypeID { groups[r]?.display.max { $0.value < $1.value || ($0.value == $1.value && $0.key > $1.key) }?.key ?? r }
        candidates = ranked.map { r in
            InferredType.Candidate(type: display(r), votes: groups[r]?.votes ?? 0, sources: groups[r]?.sources ?? [])
        }
        let fitting = ranked.filter { r in
            guard let s = try? btf.size(of: r), s > 0 else { return false }
            return extent.map { s <= $0 } ?? true
        }
        if !fitting.isEmpty {
            guard let winner = agreeing(fitting, groups.mapValues { $0.votes }) else {
                note = "the evidence disagrees: \(fitting.count) candidate types"
                return
            }
            if let conflict = insideConflict(winner, evidence) {
                note = "the evidence disagrees inside it: \(conflict)"
                return
            }
            // A scalar must have the width the code accesses it with.
            if let k = try? btf.kind(of: winner), k == .int || k == .pointer || k == .enumeration || k == .enum64,
               let s = try? btf.size(of: winner), accesses.contains(where: { UInt64($0.width) != s }) {
                note = "the evidence disagrees: loads and stores of another width than \(s) bytes"
                return
            }
            let votes = fitting.reduce(0) { $0 + (groups[$1]?.votes ?? 0) }
            type = display(winner)
            note = "type inferred from \(votes) use\(votes == 1 ? "" : "s") in code (\(groups[winner]?.sources.first ?? ""))"
            return
        }
        if !ranked.isEmpty {
            note = "no candidate fits in the \(extent.map(String.init) ?? "?") bytes to the next symbol"
            return
        }
        // Integers from plain loads and stores.
        let inside = evidence.contains {
            if case .access(_, _, false, _) = $0.kind { return $0.offset > 0 && $0.offset < (extent ?? .max) }
            if case .addressArgument = $0.kind { return $0.offset > 0 }
            if case .storedIn = $0.kind { return $0.offset > 0 }
            return false
        }
        let widths = Set(accesses.map(\.width))
        guard !inside, widths.count == 1, let w = widths.first, [1, 2, 4, 8].contains(w), extent.map({ UInt64(w) <= $0 }) ?? true else {
            note = accesses.isEmpty ? "no typed use in code" : "loads and stores don't say one integer width"
            return
        }
        // Atomic read-modify-writes (LOCK-prefixed): the kernel's atomic types, when BTF has them.
        if accesses.contains(where: \.locked), let name = [4: "atomic_t", 8: "atomic64_t"][w],
           let id = btf.lookup(name).first(where: { (try? btf.kind(of: $0)) == .typedef }) {
            type = id
            note = "type inferred from \(accesses.count) \(w)-byte accesses in code, atomic ones among them"
            candidates = [InferredType.Candidate(type: id, votes: accesses.count, sources: ["\(accesses.count) accesses of \(w) bytes, some LOCK-prefixed"])]
            return
        }
        let signed = accesses.contains { $0.signed == true } && !accesses.contains { $0.signed == false }
        let names: [Int: (String, String)] = [1: ("signed char", "unsigned char"), 2: ("short int", "short unsigned int"),
                                              4: ("int", "unsigned int"), 8: ("long int", "long unsigned int")]
        guard let pair = names[w] else { return }
        let signedness = accesses.contains { $0.signed != nil } ? signed : w != 8
        let name = signedness ? pair.0 : pair.1
        guard let id = btf.lookup(name).first(where: { (try? btf.kind(of: $0)) == .int }) else { return }
        type = id
        note = "type inferred from \(accesses.count) \(w)-byte load\(accesses.count == 1 ? "" : "s") and stores in code"
        candidates = [InferredType.Candidate(type: id, votes: accesses.count, sources: ["\(accesses.count) accesses of \(w) bytes"])]
    }

    /// The candidate that contains every other at offset 0; integers of one size agree among themselves.
    private func agreeing(_ fitting: [TypeID], _ votes: [TypeID: Int]) -> TypeID? {
        if fitting.count == 1 { return fitting[0] }
        // Integers of one size only: the most voted.
        let kinds = fitting.compactMap { try? btf.kind(of: $0) }
        if kinds.count == fitting.count, kinds.allSatisfy({ $0 == .int }),
           Set(fitting.compactMap { try? btf.size(of: $0) }).count == 1 {
            return fitting.max { (votes[$0] ?? 0) < (votes[$1] ?? 0) }
        }
        for outer in fitting.sorted(by: { ((try? btf.size(of: $0)) ?? 0) > ((try? btf.size(of: $1)) ?? 0) }) {
            let chain = atOffsetZero(outer)
            if fitting.allSatisfy({ $0 == outer || chain.contains($0) }) { return outer }
        }
        return nil
    }

    /// Every type found at offset 0 of `id` (first members, union members, array elements), resolved.
    func atOffsetZero(_ id: TypeID) -> Set<TypeID> {
        var found = Set<TypeID>()
        var frontier = [id]
        for _ in 0..<TypeDecision.maxDepth where !frontier.isEmpty {
            var next: [TypeID] = []
            for t in frontier {
                guard let r = try? btf.resolve(t), let ty = try? btf.type(r) else { continue }
                switch ty.kind {
                case .structure, .union:
                    for m in ty.members where m.bitOffset == 0 && m.bitfieldSize == 0 {
                        if let mr = try? btf.resolve(m.type), found.insert(mr).inserted { next.append(mr) }
                    }
                case .array:
                    if let er = try? btf.resolve(ty.arrayElement), found.insert(er).inserted { next.append(er) }
                default: break
                }
            }
            frontier = next
        }
        return found
    }

    /// Evidence that a member of some type sits at an offset inside `winner` where it has none.
    func insideConflict(_ winner: TypeID, _ evidence: [Evidence]) -> String? {
        guard let size = try? btf.size(of: winner) else { return nil }
        for e in evidence where e.offset > 0 && e.offset < size {
            let pointee: TypeID, source: String
            switch e.kind {
            case let .addressArgument(f, p, t): (pointee, source) = (t, "passed to \(f)() as parameter \(p + 1)")
            case let .storedIn(holder, at, t): (pointee, source) = (t, "the initial \(holder)+\(at)")
            default: continue
            }
            guard let want = try? btf.resolve(pointee) else { continue }
            if !has(winner, want, at: e.offset, depth: 0) {
                return "+\(e.offset) is \(source), a \(btf.describe(pointee)) *"
            }
        }
        return nil
    }

    /// Whether `id` has an object of (resolved) type `want` at byte `offset`.
    private func has(_ id: TypeID, _ want: TypeID, at offset: UInt64, depth: Int) -> Bool {
        guard depth < TypeDecision.maxDepth, let r = try? btf.resolve(id) else { return false }
        if offset == 0 && r == want { return true }
        guard let ty = try? btf.type(r) else { return false }
        switch ty.kind {
        case .structure, .union:
            for m in ty.members where m.bitfieldSize == 0 && m.bitOffset % 8 == 0 {
                let start = UInt64(m.bitOffset / 8)
                guard offset >= start, let s = try? btf.size(of: m.type), offset < start + max(s, 1) else { continue }
                if has(m.type, want, at: offset - start, depth: depth + 1) { return true }
            }
            return false
        case .array:
            guard let es = try? btf.size(of: ty.arrayElement), es > 0 else { return false }
            return has(ty.arrayElement, want, at: offset % es, depth: depth + 1)
        default:
            return false
        }
    }
}
