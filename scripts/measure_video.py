"""Size, decode time and fidelity of recordings at several qualities, on the same frames.

Records the demo once (the bundled agent, 300 steps, every method) losslessly (CRF 0), then
encodes those frames again at each CRF (15 is what rl-insens used before, imageio's quality 7)
and as a half-size GIF, and measures each file: its size, the time to decode it per frame
(best of three full decodes) and its PSNR against the lossless frames.

    python scripts/measure_video.py --out-dir /tmp/video_measure     # about a minute, then seconds
    python scripts/measure_video.py --source /tmp/video_measure/lossless.mp4   # reuse the recording
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from rl_insens.video import DEFAULT_CRF, VideoWriter, scaled

CRFS = tuple(sorted({15, 23, 28, 30, 35, DEFAULT_CRF}))


def decode_seconds_per_frame(path: Path, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        n = sum(1 for _ in iio.imiter(path))
        best = min(best, (time.perf_counter() - start) / n)
    return best


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path("video_measure"))
    parser.add_argument("--source", type=Path, default=None, help="A lossless recording made before.")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    source = args.source
    if source is None:
        from rl_insens.record import record

        source = args.out_dir / "lossless.mp4"
        start = time.perf_counter()
        record("agents/pong_rlnet", source, max_steps=args.steps, crf=0)
        print(f"recorded {source} in {time.perf_counter() - start:.0f} s")
    files = {f"crf {crf}": args.out_dir / f"crf{crf}.mp4" for crf in CRFS}
    files["gif, scale 0.5"] = args.out_dir / "half.gif"
    writers = {name: VideoWriter(path, crf=int(name.split()[1]) if name.startswith("crf") else 0,
                                 scale=0.5 if path.suffix == ".gif" else 1.0)
               for name, path in files.items()}
    frames = 0
    for frame in iio.imiter(source):
        for writer in writers.values():
            writer.append(frame)
        frames += 1
    for writer in writers.values():
        writer.close()
    results = {}
    for name, path in files.items():
        quality = [psnr(scaled(original, 0.5 if path.suffix == ".gif" else 1.0), copy[..., :3])
                   for original, copy in zip(iio.imiter(source), iio.imiter(path), strict=True)]
        results[name] = {"bytes": os.path.getsize(path), "kb_per_frame": os.path.getsize(path) / frames / 1e3,
                         "decode_ms_per_frame": 1e3 * decode_seconds_per_frame(path),
                         "psnr_db": float(np.mean(quality))}
    height, width = next(iter(iio.imiter(source))).shape[:2]
    print(f"{frames} frames of {width}x{height}")
    print("| file | size | per frame | decode per frame | PSNR against lossless |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['bytes'] / 1e6:.1f} MB | {r['kb_per_frame']:.1f} kB | "
              f"{r['decode_ms_per_frame']:.1f} ms | {r['psnr_db']:.1f} dB |")
    (args.out_dir / "measure.json").write_text(json.dumps({"frames": frames, "size": [width, height],
                                                           "files": results}, indent=2))


if __name__ == "__main__":
    main()
