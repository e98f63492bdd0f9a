import Foundation
import XCTest
import KernelSource
import KernelSymbols
import KreachSupport
import KreachTestSupport
@testable import Probing

/// `where MODULE:GLOBAL` from a .ko's relocations, on real Debian modules (Tests/fuzz/corpus/elf, linux-image
/// 6.12): the referencing functions, and the uses of the global's address that the pointer hint rests on.
/// Oracle: Tests/vm/reloc-oracle.py over objdump -dr and readelf -r (lea told by objdump's mnemonic, the
/// instruction's real end from its listing).
final class AddressUseTests: XCTestCase {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("fuzz/corpus/elf").path
    static let oracle = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("vm/reloc-oracle.py").path

    func oracle(_ ko: String, _ global: String, addressTaken: Bool) throws -> Set<String> {
        let r = try Run.command(["timeout", "60", "python3", AddressUseTests.oracle, ko, global] + (addressTaken ? ["--address-taken"] : []))
        XCTAssertEqual(r.status, 0, r.stderr)
        return Set(r.stdout.split(separator: "\n").map(String.init))
    }

    func references(_ ko: String, _ global: String) throws -> WhereAnalyzer.GlobalReferences {
        let elf = try ELFFile(bytes: try FileBytes.read(ko), source: ko)
        let mo = try ModuleObject(module: "test", elf: elf, sectionBases: [:])
        let index = try XCTUnwrap(mo.symbols.firstIndex { $0.name == global && $0.type == 1 }, "\(ko) has \(global)")
        return try WhereAnalyzer.references(to: index, in: mo)
    }

    /// Module parameters (stored in __param), list heads (stored in .data, compared by address), a pointer
    /// read and written in place, and statics only read and written: the address uses equal the oracle's.
    /// (The referencing functions are not compared here: a section-relative PC32 field followed by an immediate,
    /// `movl $1, max_part(%rip)` in brd_init, is placed 4 bytes off without instruction decoding, which the
    /// Arch seam's text-reference decoding is to fix; the oracle's default mode shows the difference.)
    func testReferencesAndAddressUsesMatchObjdump() throws {
        for tool in ["objdump", "readelf", "python3"] where !Run.available(tool) {
            throw XCTSkip(Host.skipReason("\(tool) is not installed (the oracle needs binutils and python3)"))
        }
        let globals = ["brd": ["rd_size", "rd_nr", "max_part", "brd_devices", "brd_debugfs_dir"],
                       "loop": ["part_shift", "max_loop", "max_loop_specified", "hw_queue_depth"],
                       "dummy": ["numdummies"]]
        var neverTaken = 0
        for (module, names) in globals {
            let ko = AddressUseTests.corpus + "/\(module).ko"
            for name in names {
                let found = try references(ko, name)
                XCTAssertFalse(found.functions.isEmpty, "\(module):\(name) is referenced by code")
                let uses = Set(found.addressUses.map { use -> String in
                    switch use {
                    case let .stored(section): "stored \(section)"
                    case let .taken(function, _): "taken \(function)"
                    }
                })
                XCTAssertEqual(uses, try oracle(ko, name, addressTaken: true), "\(module):\(name) address uses")
                if uses.isEmpty { neverTaken += 1 }
            }
        }
        XCTAssertGreaterThan(neverTaken, 0, "a global whose address is never taken is among them")
    }

    /// The pointer hint fires for a global whose address is stored (rd_size, a parameter) and not for one only
    /// read and written in place (loop's part_shift), as the oracle above says of each.
    func testPointerHintOnlyWhenTheAddressIsUsed() throws {
        let kernel = try Kernel(source: .snapshot(try DebianCapture.directory()))
        let a = WhereAnalyzer(kernel: kernel, why: WhyAnalyzer(kernel: kernel))
        let param = try references(AddressUseTests.corpus + "/brd.ko", "rd_size")
        let note = a.addressNote(module: "brd", global: "rd_size", uses: param.addressUses)
        XCTAssertEqual(note.count, 1)
        XCTAssertTrue(note.first?.hasPrefix("rd_size's address is stored in __param (.ko relocations); a module parameter") == true, "\(note)")
        XCTAssertTrue(note.first?.contains("code that fills rd_size through a pointer") == true, "\(note)")
        let direct = try references(AddressUseTests.corpus + "/loop.ko", "part_shift")
        XCTAssertFalse(direct.functions.isEmpty)
        XCTAssertEqual(a.addressNote(module: "loop", global: "part_shift", uses: direct.addressUses), [String]())
    }

    /// The encodings the Debian modules above don't have (the kernel code model passes addresses as immediates,
    /// `mov $g, %rdi`): lea with a RIP-relative operand takes the address, RIP-relative loads, stores and
    /// read-modify-writes don't. Assembled here by binutils' as; the oracle reads objdump's mnemonics.
    func testLeaTakesTheAddressLoadsAndStoresDont() throws {
        for tool in ["as", "objdump", "readelf", "python3"] where !Run.available(tool) {
            throw XCTSkip(Host.skipReason("\(tool) is not installed (the test assembles with binutils)"))
        }
        let dir = NSTemporaryDirectory() + "kreach-address-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = """
                .text
                .type f_lea, @function
            f_lea:
                leaq g(%rip), %rax
                ret
                .size f_lea, .-f_lea
                .type f_load, @function
            f_load:
                movq g(%rip), %rax
                movq %rax, g(%rip)
                addq %rax, g(%rip)
                ret
                .size f_load, .-f_load
                .type f_imm, @function
            f_imm:
                movq $g, %rdi
                ret
                .size f_imm, .-f_imm
                .type f_h, @function
            f_h:
                movl h(%rip), %eax
                ret
                .size f_h, .-f_h
                .data
                .type g, @object
                .size g, 8
            g:  .quad 0
                .type h, @object
                .size h, 4
            h:  .long 0

            """
        try FileBytes.write(source, to: dir + "/t.s")
        let assembled = try Run.command(["timeout", "60", "as", "--64", "-o", dir + "/t.o", dir + "/t.s"])
        XCTAssertEqual(assembled.status, 0, assembled.stderr)
        for (name, expected) in [("g", ["taken f_imm", "taken f_lea"]), ("h", [])] {
            let found = try references(dir + "/t.o", name)
            let uses = Set(found.addressUses.map { use -> String in
                if case let .taken(function, _) = use { return "taken \(function)" }
                return "\(use)"
            })
            XCTAssertEqual(try oracle(dir + "/t.o", name, addressTaken: true), Set(expected), "the oracle on \(name)")
            XCTAssertEqual(uses, Set(expected), name)
            XCTAssertEqual(Set(found.functions.map(\.name)), try oracle(dir + "/t.o", name, addressTaken: false), name)
        }
    }

    /// A function that is the `.show` of a static struct seq_operations (layout from the capture's vmlinux BTF)
    /// is found through the data relocation at that field, whether it names the function (a global) or its
    /// section plus offset (a static); a function stored at another member, or in an object of that size whose other
    /// members hold no functions, is not.
    /// The object is assembled here by binutils' as; readelf's relocation listing is the oracle for the fields.
    func testShowOfAStaticSeqOperations() throws {
        for tool in ["as", "readelf"] where !Run.available(tool) {
            throw XCTSkip(Host.skipReason("\(tool) is not installed (the test assembles with binutils)"))
        }
        let kernel = try Kernel(source: .snapshot(try DebianCapture.directory()))
        let a = WhereAnalyzer(kernel: kernel, why: WhyAnalyzer(kernel: kernel))
        let layout = try XCTUnwrap(a.seqOperationsLayout(), "vmlinux BTF has struct seq_operations with a show member")
        XCTAssertGreaterThanOrEqual(layout.size, layout.show + 8)
        func ops(_ name: String, _ fields: [UInt64: String]) -> String {
            var text = "    .globl \(name)\n    .type \(name), @object\n    .size \(name), \(layout.size)\n\(name):\n"
            var at: UInt64 = 0
            for (offset, function) in fields.sorted(by: { $0.key < $1.key }) {
                if offset > at { text += "    .zero \(offset - at)\n" }
                text += "    .quad \(function)\n"
                at = offset + 8
            }
            if layout.size > at { text += "    .zero \(layout.size - at)\n" }
            return text
        }
        // A seq_operations fills every member (seq_read calls start, next, stop and show): f_seq stands for the others.
        func full(_ show: String) -> [UInt64: String] {
            var fields = [layout.show: show]
            for o in layout.others { fields[o] = "f_seq" }
            return fields
        }
        // f_plain at .start of a full one, and f_half as the .show of an object with nothing else: neither is a .show.
        var decoy = full("f_seq")
        decoy[try XCTUnwrap(layout.others.first)] = "f_plain"
        let source = """
                .text
                .type f_seq, @function
            f_seq:
                ret
                .size f_seq, .-f_seq
                .type f_half, @function
            f_half:
                ret
                .size f_half, .-f_half
                .type f_show, @function
            f_show:
                movq g(%rip), %rax
                ret
                .size f_show, .-f_show
                .globl f_global_show
                .type f_global_show, @function
            f_global_show:
                ret
                .size f_global_show, .-f_global_show
                .type f_plain, @function
            f_plain:
                ret
                .size f_plain, .-f_plain
                .section .rodata
            \(ops("show_ops", full("f_show")))\(ops("global_ops", full("f_global_show")))\(ops("half_ops", [layout.show: "f_half"]))\(ops("decoy_ops", decoy))    .data
                .type g, @object
                .size g, 8
            g:  .quad 0

            """
        let dir = NSTemporaryDirectory() + "kreach-seqops-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileBytes.write(source, to: dir + "/t.s")
        let assembled = try Run.command(["timeout", "60", "as", "--64", "-o", dir + "/t.o", dir + "/t.s"])
        XCTAssertEqual(assembled.status, 0, assembled.stderr)
        // The oracle: readelf's .rela.rodata lines (offset, type, symbol + addend).
        let relocations = try Run.command(["timeout", "60", "readelf", "-rW", dir + "/t.o"]).stdout
        let showField = String(format: "%016lx", layout.show)
        let symbolTable = try Run.command(["timeout", "60", "readelf", "-sW", dir + "/t.o"]).stdout
        let fShow = try XCTUnwrap(symbolTable.split(separator: "\n").map { $0.split(separator: " ") }.first { $0.last == "f_show" && $0.count >= 8 })
        let fShowOffset = try XCTUnwrap(UInt64(fShow[1], radix: 16))
        XCTAssertTrue(relocations.split(separator: "\n").contains { $0.hasPrefix(showField) && $0.contains("R_X86_64_64") && $0.hasSuffix(".text + \(String(fShowOffset, radix: 16))") },
                      "a static's .show field is relocated as its section plus offset:\n\(relocations)")
        let mo = try ModuleObject(module: "test", elf: try ELFFile(bytes: try FileBytes.read(dir + "/t.o"), source: "t.o"), sectionBases: [:])
        let shows = WhereAnalyzer.seqShowFunctions(in: mo, size: layout.size, showOffset: layout.show, others: layout.others)
        func show(_ f: String) -> String? { shows[f] }
        XCTAssertEqual(show("f_show"), "show_ops")
        XCTAssertEqual(show("f_global_show"), "global_ops")
        XCTAssertNil(show("f_plain"), "stored at another member, not .show")
        XCTAssertNil(show("f_half"), "an object of that size holding nothing but .show is not a seq_operations")
        XCTAssertNil(show("no_such_function"))
        // And the reference hit carries it.
        let index = try XCTUnwrap(mo.symbols.firstIndex { $0.name == "g" && $0.type == 1 })
        XCTAssertEqual(try WhereAnalyzer.references(to: index, in: mo).functions.map(\.name), ["f_show"])
        let hit = a.referenceHit(function: "f_show", object: "test", place: "f_show+0x3", how: ".text", seqOperations: show("f_show"))
        XCTAssertEqual(hit.seqOperations, "show_ops")
        XCTAssertTrue(hit.detail.hasPrefix("seq_file show function, the .show of seq_operations show_ops: called once per item"), hit.detail)
    }
}
