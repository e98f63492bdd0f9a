import XCTest
import KernelObject
import KernelSource
@testable import ScriptGen
import KreachTestSupport

/// The container walks of `show` are not bpftrace (0.17 has no loop that follows kernel pointers): a script
/// naming one gets a one-line error at the macro, not bpftrace's "unknown function", for every walker.
final class WalkInScriptTests: XCTestCase {
    func testEveryContainerMacroIsAnErrorAtItsName() throws {
        let g = try ScriptGenerator(kernel: try Kernel(source: .snapshot(try DebianCapture.directory())))
        for helper in ContainerHelper.allCases {
            let script = "BEGIN {\n\t@n = count(); \(helper.macro) (struct task_struct, &`init_task.children, sibling);\n}\n"
            XCTAssertThrowsError(try g.expand(script, file: "w.bt")) {
                let lines = "\($0)".split(separator: "\n")
                XCTAssertEqual(lines.first.map(String.init), "w.bt:2:16: \(helper.macro): container walks exist only in `kreach show`, not in scripts")
            }
        }
        // A name that only starts like one, or a map of that name without a call, is bpftrace's business.
        XCTAssertNoThrow(try g.expand("BEGIN { @hash_for_each_x = 1; @for_each_cpu = 2; }", file: "w.bt"))
    }
}
