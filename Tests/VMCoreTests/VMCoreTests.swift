import Arch
import Foundation
import KreachSupport
import KreachTestSupport
import Memory
import XCTest

/// The vmcore reader on a real qemu dump of Debian 6.1 (Tests/Fixtures/vmcore-debian-6.1.0-56-qemu.tar.zst, cut
/// down to a few pages): VMCOREINFO, the 5-level walk (and the 4-level walk of the same tables below the
/// PML5), direct-map, image and module addresses, reads across a page boundary, excluded pages, bad dumps.
/// Oracles: the kernel's own VMCOREINFO (OSRELEASE, KERNELOFFSET) and the guest's /sys/module values.
final class VMCoreTests: XCTestCase {
    static let formats = ["vmcore.kdump", "vmcore.flat", "vmcore.elf"]

    /// Each format of each capture.
    func eachDump(_ body: (VMCoreCapture, String, VMCoreMemory) throws -> Void) throws {
        for capture in VMCoreCapture.all {
            for format in Self.formats {
                try body(capture, "\(capture)/\(format)", try VMCoreMemory(path: try capture.directory() + "/" + format))
            }
        }
    }

    func dump(_ name: String, _ capture: VMCoreCapture = .fiveLevel) throws -> String { try capture.directory() + "/" + name }

    func cString(_ bytes: [UInt8]) -> String { String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self) }

    /// struct new_utsname: sysname[65], nodename[65], release[65] (OFFSET(uts_namespace.name) from VMCOREINFO).
    func release(_ core: VMCoreMemory, at utsNamespace: UInt64) throws -> String {
        let name = UInt64(core.info.offsets["uts_namespace.name"] ?? 0)
        return cString(try core.read(utsNamespace + name + 130, count: 65))
    }

    func testVMCOREINFOFromTheDump() throws {
        try eachDump { capture, format, core in
            XCTAssertEqual(core.info.osRelease, try capture.facts()["release"]?.first, format)
            XCTAssertEqual(core.info.pageSize, 4096, format)
            XCTAssertEqual(core.info.fiveLevelPaging, try capture.number("levels") == 5, format)
            XCTAssertEqual(core.levels, try capture.number("levels"), format)
            // KERNELOFFSET is _stext's distance from its link address (x86-64: 0xffffffff81000000).
            XCTAssertEqual(core.info.kernelOffset, core.info.symbols["_stext"].map { $0 - 0xffff_ffff_8100_0000 }, format)
            XCTAssertEqual(core.info.symbols["init_uts_ns"], try capture.hex("init_uts_ns"), format)
            XCTAssertNotNil(InMemoryKallsyms.Tables(core.info.symbols), "\(format): this kernel exports the kallsyms tables")
        }
    }

    func testVMCOREINFOLinesAreTyped() throws {
        let info = try VMCoreInfo(text: "OSRELEASE=6.1.0\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff8a610000\nNUMBER(phys_base)=-5\nNUMBER(VMALLOC_START)=0xff626d4a80000000\nKERNELOFFSET=7c00000\nOFFSET(uts_namespace.name)=0\n")
        XCTAssertEqual(info.symbols["init_top_pgt"], 0xffff_ffff_8a61_0000)
        XCTAssertEqual(info.numbers["phys_base"], -5)
        XCTAssertEqual(info.numbers["VMALLOC_START"].map { UInt64(bitPattern: $0) }, 0xff62_6d4a_8000_0000)  // 6.12 prints it in hex
        XCTAssertEqual(info.kernelOffset, 0x7c0_0000)
        XCTAssertFalse(info.fiveLevelPaging)
        XCTAssertThrowsError(try VMCoreInfo(text: "SYMBOL(x)=zz\n")) { XCTAssertEqual("\($0)", "VMCOREINFO: can't parse the line \"SYMBOL(x)=zz\"") }
        XCTAssertThrowsError(try VMCoreInfo(text: "no equals sign\n"))
        XCTAssertThrowsError(try VMCoreInfo(text: "PAGESIZE=4095\n"))
    }

    func testKernelImageModuleAndDirectMapAddressesInEveryFormat() throws {
        try eachDump { capture, format, core in
            let want = try capture.facts()["release"]?.first
            let uts = try capture.hex("init_uts_ns")
            XCTAssertEqual(try release(core, at: uts), want, "\(format): init_uts_ns through the kernel image mapping")
            // brd's rd_size: a module address (4 KiB pages in the module area).
            let value = try core.read(try capture.hex("rd_size"), count: 8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
            XCTAssertEqual(value, UInt64(try capture.number("rd_size", 1)), "\(format): brd:rd_size is /sys/module/brd/parameters/rd_size")
            // The direct map: page_offset_base's value plus init_uts_ns's physical address is the same object.
            let pob = try core.read(try capture.hex("page_offset_base"), count: 8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
            XCTAssertEqual(pob, try capture.hex("page_offset_base", 1), format)
            let physical = try core.translate(uts)
            XCTAssertEqual(physical, try capture.hex("init_uts_ns_physical"), format)
            XCTAssertEqual(try release(core, at: pob + physical), want, "\(format): init_uts_ns through the direct map")
            // Across a page boundary: both mappings of the same physical bytes agree.
            XCTAssertEqual(try core.read(uts + 4090, count: 12), try core.read(pob + physical + 4090, count: 12), format)
        }
    }

    func testFourLevelWalkOfTheTablesBelowThePML5() throws {
        let capture = VMCoreCapture.fiveLevel
        let core = try VMCoreMemory(path: try dump("vmcore.kdump", capture))
        guard let walker = Arch.x86_64.pageTables else { return XCTFail("x86-64 has a page-table walker") }
        let entry: (UInt64) throws -> UInt64 = { try core.readPhysical($0, count: 8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } }
        for address in [try capture.hex("init_uts_ns"), try capture.hex("rd_size")] {
            // The PML5 entry for the address points at the PML4 a 4-level kernel would start from.
            let pml5 = try entry(core.root + ((address >> 48) & 0x1ff) * 8)
            let four = try walker.translate(address, root: pml5 & 0x000f_ffff_ffff_f000, levels: 4, entry: entry)
            XCTAssertEqual(four, try core.translate(address))
        }
    }

    func testExcludedAndAbsentPagesAreErrorsNeverZeros() throws {
        try eachDump { capture, format, core in
            let pob = try capture.hex("page_offset_base", 1)
            XCTAssertThrowsError(try core.read(pob + (try capture.hex("excluded_physical")), count: 8)) {
                XCTAssertTrue("\($0)".contains("was excluded from the dump"), "\(format): \($0)")
            }
            XCTAssertThrowsError(try core.readPhysical(0x1000, count: 8)) {
                XCTAssertTrue("\($0)".contains("not in the dump"), "\(format): \($0)")
            }
            // 5-level: the guard hole has no PML5 entry; 4-level: the address is not canonical at 48 bits.
            let want = core.levels == 5 ? "not mapped (PML5 entry not present)" : "not a canonical 48-bit address (4-level paging)"
            XCTAssertThrowsError(try core.read(0xff00_0000_0000_0000, count: 8)) {
                XCTAssertEqual("\($0)", "can't read 8 bytes at 0xff00000000000000: \(want)", format)
            }
            // User space is not in the kernel's tables.
            XCTAssertThrowsError(try core.read(0x40_0000, count: 8)) {
                XCTAssertEqual("\($0)", "can't read 8 bytes at 0x400000: not mapped (PML\(core.levels) entry not present)", format)
            }
        }
    }

    /// The ELF dump's PT_LOADs as the file's program headers give them (the test's own parse): physical
    /// address, file offset, bytes in the file.
    func elfLoads(_ bytes: [UInt8]) -> [(paddr: UInt64, offset: UInt64, fileSize: UInt64)] {
        func u64(_ o: Int) -> UInt64 { bytes[o..<(o + 8)].reversed().reduce(0) { $0 << 8 | UInt64($1) } }
        let phoff = Int(u64(32)), phnum = Int(bytes[56]) | Int(bytes[57]) << 8
        return (0..<phnum).map { phoff + 56 * $0 }.filter { bytes[$0] == 1 }.map { (u64($0 + 24), u64($0 + 8), u64($0 + 32)) }
    }

    func failure(_ body: () throws -> [UInt8]) -> String {
        do { return "read \(try body())" } catch { return "\(error)" }
    }

    func testCachedPagesOfAnELFDumpReadWhatTheFileHoldsAndKeepItsErrors() throws {
        // ELF pages are read a block at a time and kept: every read, first or again, gives the file's own bytes
        // at the segment's offset; an excluded page next to a cached one, and a block the file cuts short, fail
        // (or not) as a fresh reader's first read of the same bytes does.
        let path = try dump("vmcore.elf")
        let file = try FileBytes.read(path, limit: FileLimit("fixture", bytes: 16 << 20))
        let capture = VMCoreCapture.fiveLevel
        let core = try VMCoreMemory(path: path)
        let loads = elfLoads(file).filter { $0.fileSize > 0 }
        XCTAssertGreaterThan(loads.count, 3)
        func inFile(_ load: (paddr: UInt64, offset: UInt64, fileSize: UInt64), _ at: UInt64, _ count: Int) -> [UInt8] {
            Array(file[Int(load.offset + at)..<(Int(load.offset + at) + count)])
        }
        for _ in 0..<2 {
            for load in loads {
                for (offset, count) in [(0, 8), (8, 16), (4088, 8), (4095, 1), (100, 3996), (load.fileSize - 8, 8)] {
                    let at = UInt64(offset)
                    XCTAssertEqual(try core.readPhysical(load.paddr + at, count: count), inFile(load, at, count),
                                   "physical \(Hex.short(load.paddr + at)), \(count) bytes")
                }
            }
            // Across a page boundary through the page tables: two cached blocks, each at its own file offset.
            let uts = try capture.hex("init_uts_ns") + 4090
            let (first, second) = (try core.translate(uts), try core.translate(uts + 6))
            guard let a = loads.first(where: { $0.paddr <= first && first < $0.paddr + $0.fileSize }),
                  let b = loads.first(where: { $0.paddr <= second && second < $0.paddr + $0.fileSize }) else { return XCTFail("no PT_LOAD for init_uts_ns") }
            XCTAssertEqual(try core.read(uts, count: 12), inFile(a, first - a.paddr, 6) + inFile(b, second - b.paddr, 6))
        }
        // The page before the excluded one is cached; a read into the excluded page is the uncached error.
        let pob = try capture.hex("page_offset_base", 1), excluded = try capture.hex("excluded_physical")
        _ = try core.read(pob + excluded - 8, count: 8)
        for (start, count) in [(excluded - 4, 8), (excluded, 8), (excluded + 4088, 8)] {
            let fresh = failure { try VMCoreMemory(path: path).read(pob + start, count: count) }
            XCTAssertTrue(fresh.contains("was excluded from the dump"), fresh)
            XCTAssertEqual(failure { try core.read(pob + start, count: count) }, fresh)
        }
        // A file cut inside the last segment's last page: its first bytes still read, the cut ones are an error.
        guard let last = loads.max(by: { $0.offset < $1.offset }) else { return XCTFail("no PT_LOAD") }
        let pageStart = last.fileSize - 4096
        let cut = try damaged("vmcore.elf") { $0.removeSubrange(Int(last.offset + pageStart + 256)...) }
        let cutCore = try VMCoreMemory(path: cut)
        for _ in 0..<2 {
            XCTAssertEqual(try cutCore.readPhysical(last.paddr + pageStart + 8, count: 8), inFile(last, pageStart + 8, 8))
            let beyond = failure { try cutCore.readPhysical(last.paddr + pageStart + 512, count: 8) }
            XCTAssertTrue(beyond.hasPrefix("\(cut): truncated: physical \(Hex.short(last.paddr + pageStart + 512)) (PT_LOAD data)"), beyond)
        }
    }

    // MARK: bad dumps: damaged copies of the real one

    func damaged(_ name: String, _ change: (inout [UInt8]) -> Void) throws -> String {
        var bytes = try FileBytes.read(try dump(name), limit: FileLimit("fixture", bytes: 16 << 20))
        change(&bytes)
        let path = NSTemporaryDirectory() + "kreach-vmcore-\(getpid())-\(name)-\(bytes.count)"
        try FileBytes.write(bytes, to: path)
        addTeardownBlock { unlink(path) }
        return path
    }

    func error(_ path: String) -> String {
        do { _ = try VMCoreMemory(path: path); return "no error" } catch { return "\(error)" }
    }

    func testBadDumpsAreOneLineErrorsNamingWhatIsMissing() throws {
        let magic = try damaged("vmcore.kdump") { $0[0] = 0x4a }
        XCTAssertEqual(error(magic), "\(magic): not a vmcore (ELF, kdump-compressed or flattened makedumpfile): it starts with 4a 44 55 4d 50 20 20 20")
        let cutKdump = try damaged("vmcore.kdump") { $0.removeSubrange(4096...) }
        XCTAssertTrue(error(cutKdump).hasPrefix("\(cutKdump): truncated: the kdump sub-header at offset 4096"), error(cutKdump))
        let cutFlat = try damaged("vmcore.flat") { $0.removeLast(16) }
        XCTAssertTrue(error(cutFlat).contains("truncated: a flattened record header (no end marker)"), error(cutFlat))
        let cutELF = try damaged("vmcore.elf") { $0.removeSubrange(100...) }
        XCTAssertTrue(error(cutELF).hasPrefix("\(cutELF): truncated: the program headers at offset 0"), error(cutELF))
        // Program headers inside the ELF header (e_phoff 1, e_phnum 0: found by the vmcore fuzz target; it
        // trapped on an index past the 1-byte read): an error, not a crash.
        let phoffInHeader = try damaged("vmcore.elf") { bytes in
            for i in 32..<40 { bytes[i] = i == 32 ? 1 : 0 }
            bytes[56] = 0; bytes[57] = 0
        }
        XCTAssertTrue(error(phoffInHeader).hasPrefix("\(phoffInHeader): "), error(phoffInHeader))
        XCTAssertEqual(error(phoffInHeader).split(separator: "\n").count, 1, error(phoffInHeader))
        // No VMCOREINFO: the ELF note renamed; the kdump sub-header's size_vmcoreinfo zeroed.
        let noteless = try damaged("vmcore.elf") { bytes in
            if let r = bytes.firstRange(of: Array("VMCOREINFO".utf8)) { bytes[r.upperBound - 1] = 0x58 }
        }
        XCTAssertEqual(error(noteless), "\(noteless): the dump has no VMCOREINFO note (a qemu dump carries it with -device vmcoreinfo and the guest's qemu_fw_cfg module loaded)")
        let kdumpNoInfo = try damaged("vmcore.kdump") { bytes in for i in 4096 + 40..<4096 + 48 { bytes[i] = 0 } }
        XCTAssertTrue(error(kdumpNoInfo).contains("has no VMCOREINFO note"), error(kdumpNoInfo))
        // A data page cut off: the read names the missing bytes.
        let cutData = try damaged("vmcore.kdump") { $0.removeLast(2000) }
        let core = try VMCoreMemory(path: cutData)
        let uts = try VMCoreCapture.fiveLevel.hex("init_uts_ns")
        var errors: [String] = []
        for address in [uts, uts + 4096, try VMCoreCapture.fiveLevel.hex("rd_size"), try VMCoreCapture.fiveLevel.hex("page_offset_base")] {
            do { _ = try core.read(address, count: 8) } catch { errors.append("\(error)") }
        }
        XCTAssertTrue(errors.contains { $0.hasPrefix("\(cutData): truncated: the data of pfn") }, "\(errors)")
    }

    /// The fixture's kdump with `change` applied to each of its first page descriptors (24 bytes each).
    func descriptorsChanged(_ change: @escaping (inout [UInt8], Int) -> Void) throws -> String {
        try damaged("vmcore.kdump") { bytes in
            let block = 4096
            let sub = Int(bytes[432]) | Int(bytes[433]) << 8, maps = Int(bytes[436]) | Int(bytes[437]) << 8
            let first = (1 + sub + maps) * block
            var d = first
            while d + 24 <= bytes.count, bytes[d + 8] != 0 || bytes[d + 9] != 0, d < first + 24 * 64 {
                change(&bytes, d)
                d += 24
            }
        }
    }

    func testPagesThatDoNotDecompressNameTheirMethod() throws {
        // The fixture's zlib pages relabelled (page_desc.flags): lzo and snappy decoders reject zlib data.
        let address = try VMCoreCapture.fiveLevel.hex("init_uts_ns")
        for (flag, method, reason) in [(UInt8(0x2), "lzo", "lzo data"), (0x4, "snappy", "snappy data"), (0x20, "zstd", "zstd data is corrupt")] {
            let path = try descriptorsChanged { bytes, d in bytes[d + 12] = flag }
            XCTAssertThrowsError(try VMCoreMemory(path: path).read(address, count: 8)) {
                XCTAssertTrue("\($0)".hasPrefix("\(path): pfn "), "\($0)")
                XCTAssertTrue("\($0)".contains(": \(method) page does not decompress to a page (\(reason)"), "\($0)")
            }
        }
        let both = try descriptorsChanged { bytes, d in bytes[d + 12] = 0x3 }
        XCTAssertThrowsError(try VMCoreMemory(path: both).read(address, count: 8)) {
            XCTAssertTrue("\($0)".hasSuffix("page descriptor flags 0x3 name more than one compression"), "\($0)")
        }
    }

    func testAnIncompleteKdumpSaysSoForPagesItNeverWrote() throws {
        // DUMP_DH_COMPRESSED_INCOMPLETE in disk_dump_header.status, descriptors zero: makedumpfile ran out of space.
        let path = try descriptorsChanged { bytes, d in
            bytes[424] |= 0x8
            for i in d..<(d + 24) { bytes[i] = 0 }
        }
        XCTAssertThrowsError(try VMCoreMemory(path: path).read(try VMCoreCapture.fiveLevel.hex("init_uts_ns"), count: 8)) {
            XCTAssertTrue("\($0)".hasSuffix("was not written: the dump is incomplete (its header says the dumper stopped early)"), "\($0)")
        }
    }

    func testADumpOfAnotherArchitectureIsRefused() throws {
        let arm = try damaged("vmcore.elf") { $0[18] = 183; $0[19] = 0 }  // EM_AARCH64
        XCTAssertEqual(error(arm), "\(arm): a dump of ELF machine 183, not x86_64 (ELF machine 62)")
        let s390 = try damaged("vmcore.kdump") { bytes in
            bytes.replaceSubrange(272..<278, with: Array("s390x\u{0}".utf8))
        }
        XCTAssertEqual(error(s390), "\(s390): a dump of \"s390x\" (the kdump header's utsname.machine), not x86_64")
    }
}
