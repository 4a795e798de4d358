"""Screenshot of the Rerun dashboard of a saved run, rendered by the real viewer, headless.

    python scripts/dashboard_screenshot.py live.rrd live-dashboard.png [--frame 60]

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

    from clipcore.dashboard import read_rrd

    frames = read_rrd(args.rrd)["/camera/rgb"]["frames"]
    frame = frames[-1] if args.frame is None else args.frame
    import rerun_cli  # the viewer binary shipped in the rerun-sdk wheel (not its wrapper script)

    executable = str(Path(rerun_cli.__file__).parent / "rerun")
    home = tempfile.mkdtemp()  # a fresh viewer state: no layout remembered from earlier sessions
    env = {
        "WGPU_BACKEND": "vulkan",
        "RUST_LOG": "error",
        **os.environ,
        "HOME": home,
        "XDG_DATA_HOME": home,
        "XDG_CONFIG_HOME": home,
        "XDG_CACHE_HOME": home,
    }
    if not os.environ.get("XDG_RUNTIME_DIR"):
        env["XDG_RUNTIME_DIR"] = home
    viewer_process = subprocess.Popen(
        [executable, "--headless", "--window-size", args.size, "--port", str(args.port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(5)  # the viewer starts its gRPC server
        if viewer_process.poll() is not None:
            raise SystemExit(
                f"the viewer exited ({viewer_process.returncode}): is --port "
                f"{args.port} taken, or is there no graphics adapter?"
            )
        viewer = ViewerClient.connect(f"rerun+http://127.0.0.1:{args.port}/proxy")
        viewer.open(str(args.rrd.resolve()))
        time.sleep(args.settle)  # the index loads first, chunks on demand
        viewer.set_time("frame", sequence=frame, play_state="paused")
        time.sleep(args.settle)
        args.png.parent.mkdir(parents=True, exist_ok=True)
        args.png.unlink(missing_ok=True)  # wait below for the new one
        viewer.save_screenshot(str(args.png.resolve()))
        for _ in range(60):  # written by the viewer process, asynchronously
            if args.png.exists():
                break
            time.sleep(1)
    finally:
        viewer_process.terminate()
        try:
            viewer_process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            viewer_process.kill()
            viewer_process.wait()
        shutil.rmtree(home, ignore_errors=True)
    if not args.png.exists():
        raise SystemExit(f"the viewer wrote no screenshot to {args.png}; try a larger --settle")
    print(f"frame {frame} of {args.rrd} -> {args.png}")


if __name__ == "__main__":
    main()
