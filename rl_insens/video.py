"""Video files from frames: MP4 (H.264 at a chosen quality) or GIF, at a chosen scale.

Frames go to ffmpeg (through imageio-ffmpeg) one at a time, so a recording of any length
never sits in memory. The quality is x264's constant rate factor (CRF): 0 is lossless, 51 the
worst; each step of 6 roughly halves the file. Our frames are flat colours, text and smooth
heatmaps, which compress well, so the default is well above x264's usual 23 (see the README
for sizes and decode times measured on the demo recording). A GIF gets one palette made for
the whole clip (ffmpeg's palettegen), without dithering, so that the maps' colours stay flat.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np

FORMATS = (".mp4", ".gif")
DEFAULT_CRF = 28
"""x264 CRF for MP4s. rl-insens used 15 before (imageio's quality 7): 5.5x the size (see the README)."""
PRESET = "veryfast"
"""x264 preset: medium took 26 ms a frame of a six-method recording on 2 cores, competing with
the attribution work; veryfast takes 12 ms for a file 8% larger (README, "Video size")."""
MAX_SCALE = 4.0
GIF_FILTER = "split[a][b];[a]palettegen=stats_mode=diff[p];[b][p]paletteuse=dither=none"


def check_video_settings(path: str | Path, crf: int = DEFAULT_CRF, scale: float = 1.0) -> None:
    """A one-line ``ValueError`` for a file type, CRF or scale that no video can be written with."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"the video must be an .mp4 or a .gif file, got {path}")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be between 0 (lossless) and 51 (worst), got {crf}")
    if not 0 < scale <= MAX_SCALE:
        raise ValueError(f"scale must be above 0 and at most {MAX_SCALE:g}, got {scale:g}")


def scaled(frame: np.ndarray, scale: float) -> np.ndarray:
    """``frame`` resized by ``scale`` (area averaging when shrinking), padded white to even sides,
    as H.264 with 4:2:0 colour wants."""
    if scale != 1.0:
        size = (max(2, round(frame.shape[1] * scale)), max(2, round(frame.shape[0] * scale)))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST
        frame = cv2.resize(frame, size, interpolation=interpolation)
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), constant_values=255)


class VideoWriter:
    """Appends RGB frames of one size to an ``.mp4`` or ``.gif`` at ``path``.

    The first frame fixes the size. ``close()`` finishes the file; the caller writes to a
    temporary path and renames it (:func:`rl_insens.files.atomic_path`) so that nothing is
    left half-written.
    """

    def __init__(self, path: str | Path, fps: int = 30, crf: int = DEFAULT_CRF, scale: float = 1.0,
                 suffix: str | None = None) -> None:
        self.path, self.fps, self.crf, self.scale = Path(path), fps, crf, scale
        self.suffix = (suffix or self.path.suffix).lower()
        check_video_settings(f"video{self.suffix}", crf, scale)
        self.frames = 0
        self._pipe = None
        self._size: tuple[int, int] | None = None

    def _open(self, size: tuple[int, int]) -> None:
        if self.suffix == ".gif":
            settings = dict(codec="gif", pix_fmt_out="pal8", output_params=["-filter_complex", GIF_FILTER])
        else:
            settings = dict(codec="libx264", pix_fmt_out="yuv420p",
                            output_params=["-crf", str(self.crf), "-preset", PRESET])
        self._pipe = imageio_ffmpeg.write_frames(str(self.path), size, fps=self.fps, quality=None,
                                                 macro_block_size=1, ffmpeg_log_level="error", **settings)
        self._pipe.send(None)
        self._size = size

    def append(self, frame: np.ndarray) -> None:
        """Scale ``frame`` and send it to the file; a ``ValueError`` if its size is not the first frame's."""
        frame = scaled(frame, self.scale)
        size = (frame.shape[1], frame.shape[0])
        if self._pipe is None:
            self._open(size)
        elif size != self._size:
            raise ValueError(f"a frame of {size} pixels in a video of {self._size} (width, height)")
        self._pipe.send(np.ascontiguousarray(frame))
        self.frames += 1

    def close(self) -> None:
        """Finish the file (nothing is written when no frame came)."""
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FrameSample:
    """An evenly spaced sample of a stream of frames of unknown length, in bounded memory.

    Every ``stride``-th frame is kept (shrunk to ``width`` pixels); when more than ``2 * n``
    are kept, every other one is dropped and the stride doubles. At the end :meth:`pick` chooses
    ``n`` of them spread over the whole stream, the last frame included, so a contact sheet of
    a long episode shows all of it without decoding the video again.
    """

    def __init__(self, n: int, width: int = 900) -> None:
        self.n, self.width, self.stride = n, width, 1
        self.kept: list[tuple[int, np.ndarray]] = []
        self.last: tuple[int, np.ndarray] | None = None
        self.count = 0

    def _small(self, frame: np.ndarray) -> np.ndarray:
        height = round(frame.shape[0] * self.width / frame.shape[1])
        return cv2.resize(frame, (self.width, height), interpolation=cv2.INTER_AREA)

    def offer(self, frame: np.ndarray) -> None:
        index = self.count
        self.count += 1
        if index % self.stride == 0:
            self.kept.append((index, self._small(frame)))
            if len(self.kept) > 2 * self.n:
                self.stride *= 2
                self.kept = [(i, f) for i, f in self.kept if i % self.stride == 0]
            self.last = self.kept[-1]
        else:
            self.last = (index, frame)  # shrunk only if it ends up picked

    def pick(self) -> list[tuple[int, np.ndarray]]:
        """Up to ``n`` ``(index, frame)`` pairs, evenly spread from the first frame to the last."""
        if not self.count:
            return []
        candidates = dict(self.kept)
        index, frame = self.last
        candidates[index] = frame if frame.shape[1] == self.width else self._small(frame)
        indices = np.array(sorted(candidates))
        wanted = np.linspace(0, self.count - 1, min(self.n, len(indices)))
        chosen = sorted({int(indices[np.abs(indices - w).argmin()]) for w in wanted})
        return [(i, candidates[i]) for i in chosen]
