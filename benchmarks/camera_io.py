"""Write and read cost of camera frames as LeRobot ``image`` vs ``video`` features (docs/vision.md).

    .venv/bin/python -m benchmarks.camera_io [--episodes 4] [--size 64] [--repeats 2]

Renders expert episodes of button-press-v3 once (corner2 camera), then, for each storage kind,
writes the same frames with ``LeRobotDataset.create`` + ``add_frame`` / ``save_episode`` /
``finalize`` (the path ``action-tokenizers collect`` takes) and reads every frame back at every
chunk start with ``load_chunks(image_keys=...)``. Prints per-frame milliseconds and bytes on disk.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def _render(episodes: int, size: int) -> list[dict]:
    from eval.collect import run_expert_episode
    from eval.envs import CameraRenderer, expert_policy, make_env

    env = make_env("metaworld", "button-press-v3", seed=0)
    camera = CameraRenderer(env, ("corner2",), size)
    records = [run_expert_episode(env, expert_policy("metaworld", "button-press-v3"), seed, 500, 0, camera)
               for seed in range(episodes)]
    camera.close()
    env.close()
    return records


def _write(records: list, root: Path, video: bool, size: int) -> float:
    from lerobot.datasets import LeRobotDataset

    key = "observation.images.corner2"
    features = {"action": {"dtype": "float32", "shape": (4,), "names": None},
                key: {"dtype": "video" if video else "image", "shape": (size, size, 3),
                      "names": ["height", "width", "channels"]}}
    start = time.perf_counter()
    ds = LeRobotDataset.create("local/bench", 80, root=root, features=features, use_videos=video)
    for rec in records:
        for i in range(len(rec.actions)):
            ds.add_frame({"action": rec.actions[i], key: rec.images["corner2"][i], "task": "press"})
        ds.save_episode()
    ds.finalize()
    return time.perf_counter() - start


def _read(root: Path) -> tuple[float, np.ndarray]:
    from action_tokenizers.data import load_chunks

    start = time.perf_counter()
    cs = load_chunks(root, chunk_size=1, image_keys=("observation.images.corner2",))
    return time.perf_counter() - start, cs.images["observation.images.corner2"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    t = time.perf_counter()
    records = _render(args.episodes, args.size)
    frames = sum(len(r.actions) for r in records)
    render_ms = 1000 * (time.perf_counter() - t) / frames
    _read_warm = None
    out = {"frames": frames, "size": args.size, "render_and_step_ms_per_frame": render_ms}
    for kind in ("image", "video") * args.repeats:
        root = Path(tempfile.mkdtemp()) / kind
        write_s = _write(records, root, kind == "video", args.size)
        read_s, images = _read(root)
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        entry = out.setdefault(kind, {"write_ms_per_frame": [], "read_ms_per_frame": [], "bytes_per_frame": size / frames})
        entry["write_ms_per_frame"].append(1000 * write_s / frames)
        entry["read_ms_per_frame"].append(1000 * read_s / frames)
        if kind == "image":
            _read_warm = images
        else:
            entry["mean_abs_pixel_error_vs_png"] = float(np.abs(images.astype(float) - _read_warm.astype(float)).mean())
        shutil.rmtree(root.parent)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
