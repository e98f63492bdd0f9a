import ArgumentParser
import KernelSource
import KernelSymbols
import KreachSupport

struct Sym: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sym",
        abstract: "Find kernel symbols (vmlinux and modules) by name, glob or address.",
        discussion: """
            PATTERN forms:
              NAME               exact name; if none, its clones (NAME.isra.0, NAME.constprop.1, ...)
              MODULE:NAME        only in MODULE (vmlinux:NAME for the kernel image)
              MODULE:NAME#N      the Nth symbol with that name in MODULE, in kallsyms order
              MODULE:NAME@ADDR   the symbol with that name at ADDR
              nlm_*  lockd:*     globs (* ? [...]) list every match
              0xADDR             the symbol at or below ADDR, printed as name+0xOFF
            A name with several matches is an error listing each candidate and how to choose it (use --all to list them).
            Columns: address, type letter (upper case: global), name, [module].
            """)

    @OptionGroup var options: KernelOptions

    @Flag(help: "List every match of a name instead of failing when it is ambiguous.")
    var all = false

    @Argument(help: "Symbol names, MODULE:NAME, globs or hex addresses.")
    var patterns: [String]

    func validate() throws {
        if patterns.isEmpty { throw ValidationError("give at least one PATTERN") }
    }

    func run() throws {
        let kernel = try options.openKernel()
        let table = try kernel.symbols()
        var results: [JSON] = []
        var failed: [String] = []
        for pattern in patterns {
            let query = try SymbolQuery.parse(pattern)
            var found: [(KernelSymbol, UInt64?)] = []
            switch query {
            case .address(let a):
                if let s = table.find(query).first { found = [(s, a - s.address)] }
            case .glob:
                found = table.find(query).map { ($0, nil) }
            case .name:
                if all {
                    found = table.find(query).map { ($0, nil) }
                } else {
                    do { found = [(try table.resolve(pattern), nil)] } catch {
                        StandardError.write("kreach: \(error)")
                        failed.append(pattern)
                        continue
                    }
                }
            }
            if found.isEmpty {
                StandardError.write("kreach: " + SymbolError.notFound(query: pattern, hint: nil).description)
                failed.append(pattern)
                continue
            }
            for (s, offset) in found {
                if options.json {
                    results.append(symbolJSON(s, query: pattern, offset: offset))
                } else {
                    let name = s.name + (offset.map { $0 == 0 ? "" : "+" + Hex.short($0) } ?? "")
                    print(Terminal.escaped("\(Hex.address(s.address)) \(s.typeLetter) \(name)" + (s.module.map { "\t[\($0)]" } ?? "")))
                }
            }
        }
        if options.json { print(JSON.array(results).pretty) }
        if !failed.isEmpty { throw Failure(message: "", code: 1) }
    }

    private func symbolJSON(_ s: KernelSymbol, query: String, offset: UInt64?) -> JSON {
        var fields: [(String, JSON)] = [
            ("query", .string(query)),
            ("address", .string("0x" + Hex.address(s.address))),
            ("type", .string(s.typeLetter)),
            ("name", .string(s.name)),
            ("module", s.module.map(JSON.string) ?? .null),
            ("section", .string(s.section)),
            ("global", .bool(s.isGlobal)),
            ("ordinal", .uint(UInt64(s.ordinal))),
            ("base_name", .string(s.baseName)),
        ]
        if let offset { fields.append(("offset", .uint(offset))) }
        return .object(fields)
    }
}
