import Arch
import BTF
import Foundation
import KernelSource
import KernelSymbols
import KreachSupport
import KreachTestSupport
import XCTest

/// The architecture seam: chosen from real ELF headers (Debian's .ko files kept in Tests/fuzz/corpus/elf),
/// the Debian capture and the running kernel, with readelf and uname as oracles.
final class ArchTests: XCTestCase {
    static let elfCorpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("fuzz/corpus/elf").path
    static let modules = ["brd.ko", "dummy.ko", "loop.ko"]

    func elf(_ name: String) throws -> ELFFile {
        try ELFFile(bytes: try FileBytes.read(ArchTests.elfCorpus + "/" + name, limit: FileLimit("test .ko", bytes: 64 << 20)), source: name)
    }

    func testX86_64FromTheModulesELFHeaders() throws {
        for name in ArchTests.modules {
            let header = try Run.command(["readelf", "-hW", ArchTests.elfCorpus + "/" + name])
            XCTAssertTrue(header.stdout.contains("Advanced Micro Devices X86-64"), header.stdout)
            let arch = try Arch(elfMachine: try elf(name).machine, source: name)
            XCTAssertEqual(arch.name, "x86_64", name)
            XCTAssertEqual(arch.pointerSize, 8)
            XCTAssertEqual(arch.byteOrder, .little)
            XCTAssertEqual(try arch.pointer([0x00, 0x10, 0x57, 0xc0, 0xff, 0xff, 0xff, 0xff]), 0xffff_ffff_c057_1000)
        }
    }

    /// The capture's uname -a names the machine; its vmlinux BTF's `long` is the pointer size.
    func testX86_64FromTheCapture() throws {
        let kernel = try Kernel(source: .snapshot(try DebianCapture.directory()))
        let arch = try kernel.arch()
        XCTAssertEqual(arch.name, "x86_64")
        XCTAssertEqual(Int(try kernel.types().vmlinux.pointerSize), arch.pointerSize)
    }

    func testRunningKernel() throws {
        let machine = try Run.command(["uname", "-m"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let kernel = try Kernel(source: .live)
        guard let arch = try? kernel.arch() else {
            XCTAssertThrowsError(try Arch(unameMachine: machine))  // only an architecture kreach doesn't know may fail
            return
        }
        XCTAssertEqual(arch.name, machine)
        // The running kernel's text is a kernel address at one of the architecture's address widths.
        if let stext = try KernelFacts.vmlinuxSymbol("_stext", letters: "tT"), stext.address != 0 {
            XCTAssertTrue(arch.addressSpace.isKernelAddress(stext.address), Hex.address(stext.address))
            XCTAssertGreaterThanOrEqual(stext.address, KernelFacts.kernelHalfStart)
        } else {
            print("note: kallsyms hides addresses (not root?): _stext not checked")
        }
    }

    /// EM_AARCH64 (183) and a machine name kreach doesn't know: one line each, no crash.
    func testUnknownMachineIsAOneLineError() throws {
        var bytes = try FileBytes.read(ArchTests.elfCorpus + "/brd.ko", limit: FileLimit("test .ko", bytes: 64 << 20))
        bytes[18] = 183
        bytes[19] = 0
        let elf = try ELFFile(bytes: bytes, source: "brd.ko")
        XCTAssertThrowsError(try Arch(elfMachine: elf.machine, source: "brd.ko")) {
            XCTAssertEqual("\($0)", "brd.ko: ELF machine 183 is not an architecture kreach supports (x86_64)")
        }
        XCTAssertThrowsError(try Arch(unameMachine: "aarch64")) {
            XCTAssertEqual("\($0)", "the kernel runs on aarch64, not an architecture kreach supports (x86_64)")
        }
        XCTAssertThrowsError(try Arch.x86_64.pointer([1, 2, 3, 4])) { XCTAssertFalse("\($0)".contains("\n")) }
    }

    /// The kernel half of the address space (Documentation/arch/x86/x86_64/mm.rst: ffff800000000000 with
    /// 4-level page tables, ff00000000000000 with 5-level), and none of this process's mappings in it but
    /// the legacy [vsyscall] page.
    func testAddressSpace() throws {
        let space = Arch.x86_64.addressSpace
        XCTAssertEqual(space.kernelStart(width: 48), 0xffff_8000_0000_0000)
        XCTAssertEqual(space.kernelStart(width: 57), 0xff00_0000_0000_0000)
        XCTAssertFalse(space.isKernelAddress(0x0000_7fff_ffff_f000))
        XCTAssertTrue(space.isKernelAddress(0xffff_ffff_8100_0000))
        let maps = try String(contentsOfFile: "/proc/self/maps", encoding: .utf8)
        for line in maps.split(separator: "\n") where !line.hasSuffix("[vsyscall]") {
            let start = try XCTUnwrap(UInt64(line.prefix { $0 != "-" }, radix: 16), String(line))
            XCTAssertFalse(space.isKernelAddress(start), String(line))
        }
    }

    /// Every relocation type the kernel's x86-64 module loader applies has a meaning; the rest are refused.
    func testRelocationTypes() throws {
        let x86 = Arch.x86_64
        XCTAssertEqual(x86.relocation(2)?.form, .pcRelative)    // R_X86_64_PC32
        XCTAssertEqual(x86.relocation(4)?.form, .pcRelative)    // R_X86_64_PLT32
        XCTAssertEqual(x86.relocation(11)?.form, .absolute)     // R_X86_64_32S
        XCTAssertEqual(x86.relocation(1)?.width, 8)             // R_X86_64_64
        XCTAssertNil(x86.relocation(5))                         // R_X86_64_COPY: never in a module
        // PC32 to a section symbol + (offset - 4): the referenced address is the offset.
        let pc32 = try XCTUnwrap(x86.relocation(2))
        let load: [UInt8] = [0x8b, 0x05, 0, 0, 0, 0]                  // mov 0x0(%rip),%eax
        XCTAssertEqual(x86.referencedAddress(pc32, symbolValue: 0x100, addend: 0x20 - 4, code: load, field: 2), 0x120)
        // movl $0x1,0x0(%rip) (brd.ko's init_module+0x25): the imm32 after the field moves the end by 4.
        let store: [UInt8] = [0xc7, 0x05, 0, 0, 0, 0, 1, 0, 0, 0]
        XCTAssertEqual(x86.referencedAddress(pc32, symbolValue: 0x100, addend: 0x20 - 8, code: store, field: 2), 0x120)
        // Every relocation type in the corpus' text sections is one the loader applies, named as readelf names it.
        for name in ArchTests.modules {
            let f = try elf(name)
            let listing = try Run.command(["readelf", "-rW", ArchTests.elfCorpus + "/" + name]).stdout
            for (i, s) in f.sections.enumerated() where s.name.hasPrefix(".text") {
                for r in f.relocations(for: i) {
                    let relocation = try XCTUnwrap(x86.relocation(r.type), "\(name): type \(r.type)")
                    XCTAssertTrue(listing.contains(relocation.name + " "), "\(name): \(relocation.name)")
                }
            }
        }
    }
}
