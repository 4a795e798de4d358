"""Screenshot of the Rerun dashboard of a saved run, rendered by the real viewer, headless.

    python scripts/dashboard_screenshot.py live.rrd docs/images/live-dashboard.png [--frame 60]

Starts ``rerun --headless`` (the viewer of the installed rerun-sdk, no window), opens the .rrd
with its saved layout, seeks the ``frame`` timeline and saves a screenshot. The viewer needs a
graphics adapter: a GPU, or a software rasteriser such as Mesa's lavapipe (Debian:
``apt-get install mesa-vulkan-drivers libvulkan1``; then ``WGPU_BACKEND=vulkan``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rrd", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--frame", type=int, default=None, help="Frame to show [default: last].")
    parser.add_argument("--port", type=int, default=9877, help="gRPC port of the headless viewer.")
    parser.add_argument("--size", default="1280x720", help="Viewer size in points (x2 pixels).")
    parser.add_argument("--settle", type=float, default=20.0, help="Seconds to load and draw.")
    args = parser.parse_args()

    from rerun.experimental import ViewerClient

    from carla_capture.dashboard import read_rrd

    frames = read_rrd(args.rrd)["/camera/rgb"]["frames"]
    frame = frames[-1] if args.frame is None else args.frame
    beside = Path(sys.executable).parent / "rerun"  # the venv's viewer, on PATH or not
    executable = str(beside) if beside.exists() else shutil.which("rerun")
    env = {"WGPU_BACKEND": "vulkan", "RUST_LOG": "error", **os.environ}
    if not os.environ.get("XDG_RUNTIME_DIR"):
        env["XDG_RUNTIME_DIR"] = tempfile.mkdtemp()
    viewer_process = subprocess.Popen(
        [executable, "--headless", "--window-size", args.size, "--port", str(args.port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(5)  # the viewer starts its gRPC server
        viewer = ViewerClient.connect(f"rerun+http://127.0.0.1:{args.port}/proxy")
        viewer.open(str(args.rrd.resolve()))
        time.sleep(args.settle)  # the index loads first, chunks on demand
        viewer.set_time("frame", sequence=frame, play_state="paused")
        time.sleep(args.settle)
        args.png.parent.mkdir(parents=True, exist_ok=True)
        viewer.save_screenshot(str(args.png.resolve()))
        for _ in range(60):  # written by the viewer process, asynchronously
            if args.png.exists():
                break
            time.sleep(1)
    finally:
        viewer_process.terminate()
        viewer_process.wait(timeout=30)
    print(f"frame {frame} of {args.rrd} -> {args.png}")


if __name__ == "__main__":
    main()
