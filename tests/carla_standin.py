"""A stand-in CARLA server process for tests: what must outlive a capture worker lives here.

``python tests/carla_standin.py --port P --state FILE [--faults JSON]`` listens on P and answers
JSON lines: ``hello`` (boot id, version, map, settings), ``tick``, ``settings``, ``load``,
``tm``. The tick counter, frame counter, settings and fired faults persist in FILE, so a
relaunched stand-in does not fire a fault twice and a test can read the final settings.
Faults, by global tick count: ``hang`` [ticks] never answer that tick (like the Traffic
Manager's C++ hang, CARLA #9172, the client waits forever); ``crash`` {tick: seconds} drops
every connection and answers nothing for that long (a negative value: exit for good, so only
a relaunch brings it back). The in-process double (tests/carla_double.py) talks to it when a
``FakeServer`` is built with ``remote=(host, port)``. Standard library only, so it starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path


class StandIn:
    def __init__(self, port: int, state: Path, faults: dict) -> None:
        self.port, self.path, self.faults = port, state, faults
        self.lock = threading.Lock()
        self.state = (
            json.loads(state.read_text())
            if state.exists()
            else {
                "ticks": 0,
                "frame": 1000,
                "fired": [],
                "sync": False,
                "delta": None,
                "tm_sync": False,
                "map": "Town10HD_Opt",
                "launches": 0,
            }
        )
        self.state.update(
            sync=False, delta=None, tm_sync=False, map="Town10HD_Opt"
        )  # a fresh server
        self.state["launches"] += 1
        self.boot, self.down_s = uuid.uuid4().hex, None
        self.conns: list[socket.socket] = []
        self._save()

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        tmp.replace(self.path)

    def serve(self) -> None:
        while True:
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(16)
            listener.settimeout(0.05)  # closing a socket from another thread does not wake accept()
            while self.down_s is None:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                conn.settimeout(None)
                self.conns.append(conn)
                threading.Thread(target=self._handle, args=(conn,), daemon=True).start()
            listener.close()  # down: connections are refused
            time.sleep(self.down_s)
            with self.lock:  # comes back as a fresh server
                self.down_s = None
                self.state.update(sync=False, delta=None, tm_sync=False, map="Town10HD_Opt")
                self.boot = uuid.uuid4().hex
                self._save()

    def _crash(self, down_s: float) -> None:
        self.down_s = down_s
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            except OSError:
                pass
        self.conns = []
        if down_s < 0:
            os._exit(3)

    def _handle(self, conn: socket.socket) -> None:
        reader = conn.makefile("r")
        for line in reader:
            request = json.loads(line)
            reply = self._answer(request)
            if reply is None:
                conn.close()
                return
            try:
                conn.sendall((json.dumps(reply) + "\n").encode())
            except OSError:
                return

    def _answer(self, request: dict) -> dict | None:
        op, s = request["op"], self.state
        with self.lock:
            if (
                self.down_s is not None
            ):  # crashed: a connection accepted in the meantime gets nothing
                return None
            if op == "tick":
                s["ticks"] += 1
                key = str(s["ticks"])
                if key not in s["fired"]:
                    if s["ticks"] in self.faults.get("hang", []):
                        s["fired"].append(key)
                        self._save()
                        hang = True
                    elif key in self.faults.get("crash", {}):
                        s["fired"].append(key)
                        self._save()
                        self._crash(float(self.faults["crash"][key]))
                        return None
                    else:
                        hang = False
                    if hang:
                        self.lock.release()
                        try:
                            threading.Event().wait()
                        finally:
                            self.lock.acquire()
                s["frame"] += 1
            elif op == "settings":
                s["sync"], s["delta"] = request["sync"], request["delta"]
            elif op == "load":
                s["map"] = request["map"]
                s["sync"], s["delta"] = False, None
            elif op == "tm":
                s["tm_sync"] = request["sync"]
            self._save()
            return {
                "boot": self.boot,
                "frame": s["frame"],
                "map": s["map"],
                "sync": s["sync"],
                "delta": s["delta"],
                "tm_sync": s["tm_sync"],
            }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--faults", default="{}")
    args = parser.parse_args()
    StandIn(args.port, args.state, json.loads(args.faults)).serve()


if __name__ == "__main__":
    main()
