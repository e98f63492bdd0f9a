import Foundation
import Glibc
import XCTest
import Exporter
import KernelSource
import Memory
import KreachTestSupport

/// Values reached through a pointer into a module's memory (the expression names no module): the real
/// Debian 6.1 capture's symbols, BTF and module list (brd core at 0xffffffffc0571000, 20480 bytes,
/// rd_size at 0xffffffffc05740d8), with the module list rewritten between and during reads as rmmod and
/// modprobe would, and the kernel memory those reads see served from a table.
final class ModuleMemoryTests: XCTestCase {
    /// A vmlinux cell holding a pointer into brd's data: the chain `**(int **)cell`.
    static let cell: UInt64 = 0xffff_ffff_8260_0000
    static let brdCore: UInt64 = 0xffff_ffff_c057_1000
    static let rdSizeOffset: UInt64 = 0xffff_ffff_c057_40d8 - brdCore

    /// Kernel memory as a table of 8-byte cells; a read outside it faults. `onRead` runs before each read.
    final class TableMemory: KernelMemory {
        var cells: [UInt64: UInt64] = [:]
        var onRead: (UInt64) -> Void = { _ in }
        let name = "table"
        func read(_ address: UInt64, count: Int) throws -> [UInt8] {
            onRead(address)
            guard count <= 8, let v = cells[address] else { throw MemoryFault(address: address, count: count, reason: "not mapped") }
            return Array(withUnsafeBytes(of: v.littleEndian) { Array($0) }.prefix(count))
        }
        func currentTask() throws -> UInt64 { throw MemoryFault(address: 0, count: 0, reason: "no current task in a table") }
    }

    var dir = ""
    var modulesWithoutBrd = ""

    override func setUpWithError() throws {
        let capture = try DebianCapture.directory()
        dir = NSTemporaryDirectory() + "kreach-modmem-\(getpid())-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for entry in try FileManager.default.contentsOfDirectory(atPath: capture) where entry != "modules" && !entry.hasPrefix(".") {
            try FileManager.default.createSymbolicLink(atPath: dir + "/" + entry, withDestinationPath: capture + "/" + entry)
        }
        let modules = try String(contentsOfFile: capture + "/modules", encoding: .utf8)
        XCTAssertTrue(modules.contains("brd 20480 0 - Live 0xffffffffc0571000\n"), "the capture's brd line")
        modulesWithoutBrd = modules.split(separator: "\n").filter { !$0.hasPrefix("brd ") }.map { $0 + "\n" }.joined()
        try loadBrd(at: Self.brdCore)
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    /// The module list with brd's core at `core` (nil: brd unloaded), in `state` (Live, Loading, Unloading).
    func loadBrd(at core: UInt64?, state: String = "Live") throws {
        let brd = core.map { "brd 20480 0 - \(state) 0x\(String($0, radix: 16))\n" } ?? ""
        try (modulesWithoutBrd + brd).write(toFile: dir + "/modules", atomically: true, encoding: .utf8)
    }

    func collector(_ memory: TableMemory) throws -> Collector {
        let config = try ExporterConfig(yaml: """
            metrics:
              - name: rd_size_by_pointer
                help: brd's rd_size through a pointer held in vmlinux memory (no module named)
                type: gauge
                expr: "**(int **)0x\(String(Self.cell, radix: 16))"
            """, file: "test.yaml")
        let snapshot = dir
        return Collector(config: config, memory: memory, openKernel: { try Kernel(source: .snapshot(snapshot)) })
    }

    func value(_ text: String, _ name: String) -> String? {
        text.split(separator: "\n").first { $0.hasPrefix(name + " ") || $0.hasPrefix(name + "{") }.map { String($0.split(separator: " ").last ?? "") }
    }

    func testValuesInModuleMemoryFollowTheModule() throws {
        let memory = TableMemory()
        let collector = try collector(memory)
        let errors = "kreach_exporter_read_errors_total{metric=\"kreach_rd_size_by_pointer\"}"
        // Loaded: the value at the pointer.
        memory.cells = [Self.cell: Self.brdCore + Self.rdSizeOffset, Self.brdCore + Self.rdSizeOffset: 12345]
        var text = TextFormat.render(collector.collect())
        XCTAssertEqual(value(text, "kreach_rd_size_by_pointer"), "12345", text)
        // brd reloaded elsewhere while the value was being read: dropped, neither reported nor an error.
        memory.onRead = { [self] address in
            if address == Self.brdCore + Self.rdSizeOffset { try? loadBrd(at: 0xffff_ffff_c090_0000) }
        }
        text = TextFormat.render(collector.collect())
        XCTAssertNil(value(text, "kreach_rd_size_by_pointer"), text)
        XCTAssertEqual(value(text, "kreach_exporter_discarded_reads_total"), "1", text)
        XCTAssertEqual(value(text, errors), "0", text)
        memory.onRead = { _ in }
        // Unloading (rmmod under way, MODULE_STATE_GOING: brd's memory still mapped and readable): dropped, not
        // reported, though the read succeeded.
        try loadBrd(at: Self.brdCore, state: "Unloading")
        memory.cells = [Self.cell: Self.brdCore + Self.rdSizeOffset, Self.brdCore + Self.rdSizeOffset: 12345]
        text = TextFormat.render(collector.collect())
        XCTAssertNil(value(text, "kreach_rd_size_by_pointer"), text)
        XCTAssertEqual(value(text, "kreach_exporter_discarded_reads_total"), "2", text)
        XCTAssertEqual(value(text, errors), "0", text)
        // Unloaded: the kernel's pointer is stale and its memory unmapped: absent, not a read error.
        try loadBrd(at: nil)
        memory.cells = [Self.cell: Self.brdCore + Self.rdSizeOffset]
        text = TextFormat.render(collector.collect())
        XCTAssertNil(value(text, "kreach_rd_size_by_pointer"), text)
        XCTAssertEqual(value(text, errors), "0", text)
        // Loaded again at a new address: read there.
        let core: UInt64 = 0xffff_ffff_c0a0_0000
        try loadBrd(at: core)
        memory.cells = [Self.cell: core + Self.rdSizeOffset, core + Self.rdSizeOffset: 4321]
        text = TextFormat.render(collector.collect())
        XCTAssertEqual(value(text, "kreach_rd_size_by_pointer"), "4321", text)
        XCTAssertEqual(value(text, errors), "0", text)
        // A pointer into no module's memory that faults is a read error, as before.
        memory.cells = [Self.cell: 0x10]
        text = TextFormat.render(collector.collect())
        XCTAssertNil(value(text, "kreach_rd_size_by_pointer"), text)
        XCTAssertEqual(value(text, errors), "1", text)
    }
}
