#!/usr/bin/env python3
"""Host side of the guest's memory dumps (Tests/vm/run starts it before qemu).

Listens on CONTROL (qemu connects its second serial port, the guest's /dev/ttyS1, to it). For each line
"dump NAME" the guest writes, dumps the guest's memory through qemu's QMP socket QMP twice:
DIR/NAME.elf (dump-guest-memory, ELF) and DIR/NAME.kdump (format kdump-zlib, qemu's flattened form), then
answers "dumped NAME" (or "error NAME: why") on the same line. qemu's dump is synchronous: the guest is
stopped while it runs, so the dumps hold the state the guest recorded before asking.
"""
import json, os, socket, sys

control, qmp_path, out_dir = sys.argv[1:4]
TIMEOUT = 600

def qmp(cmd, args=None):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect(qmp_path)
    f = s.makefile("rw")
    json.loads(f.readline())  # greeting
    def call(c, a=None):
        f.write(json.dumps({"execute": c, **({"arguments": a} if a else {})}) + "\n"); f.flush()
        while True:
            r = json.loads(f.readline())
            if "return" in r: return r["return"]
            if "error" in r: raise RuntimeError(r["error"].get("desc", str(r["error"])))
    call("qmp_capabilities")
    try:
        return call(cmd, args)
    finally:
        s.close()

srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(control)
srv.listen(1)
srv.settimeout(TIMEOUT)
print("ready", flush=True)  # Tests/vm/run waits for this line before starting qemu
conn, _ = srv.accept()
conn.settimeout(None)
buf = b""
while True:
    data = conn.recv(4096)
    if not data: break
    buf += data
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        words = line.decode(errors="replace").strip().split()
        if len(words) != 2 or words[0] != "dump" or not words[1].replace("-", "").isalnum():
            continue
        name = words[1]
        try:
            for ext, fmt in (("elf", "elf"), ("kdump", "kdump-zlib")):
                path = os.path.join(out_dir, f"{name}.{ext}")
                qmp("dump-guest-memory", {"paging": False, "protocol": "file:" + path, "format": fmt})
            reply = f"dumped {name}\n"
        except Exception as e:  # the guest gets the reason on its line
            reply = f"error {name}: {e}\n".replace("\r", " ")
        conn.sendall(reply.encode())
