"""Reading and writing video clips with PyAV (FFmpeg's libraries, bundled in its wheels).

:class:`VideoReader` decodes a clip on a thread of its own and hands out upright RGB
``uint8`` frames: a clip a phone recorded sideways carries a rotation in its display
matrix, which is applied before anything sees the frame, as :func:`faceanon.imageio.read_image`
applies EXIF orientation, so that a face detector sees the picture the way a person does.

:class:`VideoWriter` encodes frames on a thread of its own into a new file that keeps the
source's frame size, frame rate and timestamps, and, by default, copies its audio streams
packet for packet (``audio="copy"``; ``"drop"`` leaves them out). Nothing else of the source
is carried over: no container or stream metadata (titles, dates, GPS location), no
subtitle, data or attachment streams (which can hold GPS tracks or a cover picture), no
display matrix (the frames are already upright). The file is written under a temporary
name in the target folder and renamed only once complete, so a crash or an error never
leaves a half-written clip under the final name.

Every problem with an input (missing, empty, not a video, no video stream, corrupt or
truncated) raises :class:`VideoError` naming the file.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from faceanon.imageio import create_partial

#: Output containers by suffix: (FFmpeg muxer, video encoder, encoder options).
CONTAINERS: dict[str, tuple[str, str, dict[str, str]]] = {
    ".mp4": ("mp4", "libx264", {"crf": "18", "preset": "veryfast"}),
    ".m4v": ("mp4", "libx264", {"crf": "18", "preset": "veryfast"}),
    ".mov": ("mov", "libx264", {"crf": "18", "preset": "veryfast"}),
    ".mkv": ("matroska", "libx264", {"crf": "18", "preset": "veryfast"}),
    ".webm": ("webm", "libvpx-vp9", {"crf": "30", "b": "0", "deadline": "realtime"}),
}
#: Suffixes read and written as video.
VIDEO_SUFFIXES = frozenset(CONTAINERS)
#: What a writer may do with the source's audio.
AUDIO_MODES = ("copy", "drop")


class VideoError(ValueError):
    """A clip could not be read or written; the message names the file and the problem."""

    def __init__(self, path: os.PathLike | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def is_video_path(path: os.PathLike | str) -> bool:
    """True when the file name has one of the video suffixes faceanon reads and writes."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoInfo:
    """What a clip holds, as the reader will hand it out.

    ``width`` and ``height`` are those of the upright frames (after ``rotation``, the
    counter-clockwise angle of the source's display matrix, is applied). ``frames`` is the
    frame count the container declares, ``None`` when it declares none (Matroska, WebM).
    ``frame_rate`` is the stream's average rate. ``audio`` names the codec of each audio
    stream.
    """

    path: Path
    width: int
    height: int
    frame_rate: Fraction
    frames: int | None
    duration: float | None
    codec: str
    rotation: int
    time_base: Fraction
    audio: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(height, width, 3)``: the shape of every frame the reader hands out."""
        return (self.height, self.width, 3)


@dataclass(frozen=True)
class Frame:
    """One decoded frame: its position in the clip, upright RGB pixels and timestamp.

    ``pts`` is in units of ``time_base`` (the source stream's), ``None`` when the source
    gives none.
    """

    index: int
    image: np.ndarray
    pts: int | None
    time_base: Fraction

    @property
    def time(self) -> float | None:
        """Presentation time in seconds."""
        return None if self.pts is None else float(self.pts * self.time_base)


def _av():
    import av

    return av


def _open_input(path: Path):
    """Open ``path`` with PyAV, turning every failure into a :class:`VideoError`."""
    av = _av()
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise VideoError(path, "file not found") from None
    except OSError as error:
        raise VideoError(path, f"cannot be read ({error.strerror or error})") from None
    if path.is_dir():
        raise VideoError(path, "is a folder, not a video file")
    if size == 0:
        raise VideoError(path, "file is empty")
    try:
        return av.open(str(path), mode="r")
    except av.error.InvalidDataError:
        raise VideoError(path, "not a video (unknown or corrupt format, or truncated)") from None
    except (av.error.FFmpegError, OSError) as error:
        raise VideoError(path, f"cannot be opened as a video ({error})") from None


def _first_frame_rotation(path: Path, container, stream) -> int:
    """Counter-clockwise display rotation in degrees, read from the first decoded frame.

    PyAV exposes the display matrix on frames, not on streams; decoding one frame also
    proves that the stream can be decoded at all.
    """
    av = _av()
    try:
        for frame in container.decode(stream):
            return int(round(frame.rotation or 0)) % 360
    except (av.error.FFmpegError, OSError) as error:
        raise VideoError(path, f"corrupt or truncated video ({error})") from None
    raise VideoError(path, "no frame could be decoded (corrupt or truncated)")


def _info(path: Path, container) -> VideoInfo:
    """Read a clip's header and first frame; the container is consumed (reopen to decode)."""
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoError(path, f"no video stream (streams found: {', '.join(kinds)})")
    stream = container.streams.video[0]
    width, height = stream.codec_context.width, stream.codec_context.height
    if not width or not height:
        raise VideoError(path, "the video stream has no frame size (corrupt header)")
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate:
        raise VideoError(path, "the video stream has no frame rate")
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / 1_000_000
    rotation = _first_frame_rotation(path, container, stream)
    if rotation in (90, 270):
        width, height = height, width
    return VideoInfo(
        path=path,
        width=int(width),
        height=int(height),
        frame_rate=Fraction(rate),
        frames=int(stream.frames) if stream.frames else None,
        duration=duration,
        codec=stream.codec_context.name,
        rotation=rotation,
        time_base=Fraction(stream.time_base) if stream.time_base else Fraction(1, 1) / rate,
        audio=tuple(s.codec_context.name for s in container.streams.audio),
    )


def probe_video(path: os.PathLike | str) -> VideoInfo:
    """What a clip holds, read from its header.

    Raises
    ------
    VideoError
        When the file is missing, empty, not a video or holds no video stream.
    """
    path = Path(path)
    with _open_input(path) as container:
        return _info(path, container)


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a counter-clockwise display rotation of 0, 90, 180 or 270 degrees."""
    turns = {0: 0, 90: 1, 180: 2, 270: 3}.get(rotation % 360)
    if turns is None:
        raise ValueError(f"unsupported rotation {rotation} (only multiples of 90)")
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


_END = object()


class VideoReader:
    """Decode a clip's video frames on a background thread, as upright RGB ``uint8``.

    Use it as a context manager and iterate over it for :class:`Frame` objects, once::

        with VideoReader("clip.mp4") as reader:
            for frame in reader:
                ...

    The header is read when the reader is created, so a file that is not a video fails
    at once. Decoding runs ahead of the consumer by at most ``buffer`` frames.

    Parameters
    ----------
    path
        The clip.
    max_frames
        Stop after this many frames (``None``: all). Used to work on the start of a clip.
    buffer
        Frames decoded ahead of the consumer.

    Raises
    ------
    VideoError
        From the constructor for a file that is not a readable video; while iterating for
        a corrupt stream, or a truncated one: fewer frames than the container declares.
    """

    def __init__(self, path: os.PathLike | str, *, max_frames: int | None = None, buffer: int = 16):
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self.path = Path(path)
        self.max_frames = max_frames
        self.info = probe_video(self.path)
        if self.info.rotation % 90:
            raise VideoError(
                self.path,
                f"display rotation {self.info.rotation} degrees is not a multiple of 90; "
                "cannot make the frames upright",
            )
        self._container = _open_input(self.path)
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, buffer))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.frames_read = 0

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _put(self, item) -> bool:
        """Hand an item to the consumer; False when the reader was closed meanwhile."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _decode(self) -> None:
        av = _av()
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        rotation = self.info.rotation
        index = 0
        try:
            for packet in self._container.demux(stream):
                # The last packet of the demuxer is empty: decoding it flushes the frames
                # the decoder still holds (B-frames), so it is decoded too.
                for decoded in packet.decode():
                    if self.max_frames is not None and index >= self.max_frames:
                        self._put(_END)
                        return
                    image = _upright(decoded.to_ndarray(format="rgb24"), rotation)
                    frame = Frame(
                        index,
                        image,
                        decoded.pts,
                        Fraction(decoded.time_base or self.info.time_base),
                    )
                    if not self._put(frame):
                        return
                    index += 1
            if index == 0:
                raise VideoError(self.path, "no frame could be decoded (corrupt or truncated)")
            declared = self.info.frames
            if (
                declared
                and index < declared
                and (self.max_frames is None or index < self.max_frames)
            ):
                raise VideoError(
                    self.path,
                    f"truncated or corrupt: decoded {index} of the {declared} frames the "
                    "container declares",
                )
            self._put(_END)
        except VideoError as error:
            self._put(error)
        except (av.error.FFmpegError, OSError) as error:
            self._put(VideoError(self.path, f"corrupt or truncated video ({error})"))
        except BaseException as error:  # handed to the consumer, never lost in the thread
            self._put(error)

    def __iter__(self) -> Iterator[Frame]:
        if self._thread is not None:
            raise RuntimeError("a VideoReader can be iterated only once")
        self._thread = threading.Thread(target=self._decode, name="faceanon-decode", daemon=True)
        self._thread.start()
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            self.frames_read += 1
            yield item

    def close(self) -> None:
        """Stop decoding and release the file (safe to call more than once)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._container.close()


def read_frames(path: os.PathLike | str, *, max_frames: int | None = None) -> Iterator[Frame]:
    """Every frame of a clip, upright RGB, decoded on a background thread (see VideoReader)."""
    with VideoReader(path, max_frames=max_frames) as reader:
        yield from reader


class VideoWriter:
    """Encode frames into a new clip shaped like a source clip, on a background thread.

    Use it as a context manager; :meth:`write` queues a frame, leaving the context
    normally finishes the file and renames it into place, leaving it by an exception
    deletes the partial file::

        with VideoReader(src) as reader, VideoWriter(dst, source=reader.info) as writer:
            for frame in reader:
                writer.write(frame, anonymized_pixels)

    Parameters
    ----------
    path
        The file to write; its suffix picks the container and encoder (:data:`CONTAINERS`).
        Its folder is created.
    source
        The clip the frames come from: its size, rate and time base are kept, and its audio
        is copied from it.
    audio : {"copy", "drop"}
        Copy every audio stream of the source packet for packet (not re-encoded), or write
        none.
    trim_audio
        Copy only the audio that starts before the end of the last frame written (set it
        when only the start of a clip is written); by default all of it is copied, as the
        source's soundtrack may run a little longer than its pictures.
    options
        Encoder options replacing the defaults of :data:`CONTAINERS` (e.g. ``{"crf": "23"}``).

    Raises
    ------
    VideoError
        For an unknown suffix, a frame size the encoder cannot take (odd sizes with
        H.264's 4:2:0), or an audio stream the container cannot hold (use
        ``audio="drop"``), naming the file.
    """

    def __init__(
        self,
        path: os.PathLike | str,
        *,
        source: VideoInfo,
        audio: str = "copy",
        trim_audio: bool = False,
        options: dict[str, str] | None = None,
        buffer: int = 16,
    ):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in CONTAINERS:
            raise VideoError(
                self.path,
                f"unknown video suffix {suffix or '(none)'}; use one of "
                f"{', '.join(sorted(CONTAINERS))}",
            )
        if audio not in AUDIO_MODES:
            raise ValueError(f"audio must be one of {', '.join(AUDIO_MODES)}, got {audio!r}")
        self.format, self.codec, defaults = CONTAINERS[suffix]
        if self.codec == "libx264" and (source.width % 2 or source.height % 2):
            raise VideoError(
                source.path,
                f"frame size {source.width}x{source.height} is odd; the H.264 "
                "encoder needs an even width and height",
            )
        self.options = {**defaults, **(options or {})}
        self.source = source
        self.audio = audio
        self.trim_audio = bool(trim_audio)
        self.frames_written = 0
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, buffer))
        self._error: BaseException | None = None
        self._closed = False
        # the same permissions as a published image (the umask's), not mkstemp's 0600
        descriptor, self._temporary = create_partial(self.path)
        os.close(descriptor)
        self._thread = threading.Thread(target=self._run, name="faceanon-encode", daemon=True)
        self._thread.start()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            self.abort()
            raise error

    def write(self, frame: Frame, image: np.ndarray) -> None:
        """Queue ``image`` (RGB ``uint8``, the source's upright size) at ``frame``'s time."""
        if self._closed:
            raise RuntimeError(f"{self.path}: writer is closed")
        self._raise_pending()
        image = np.asarray(image)
        if image.shape != self.source.shape or image.dtype != np.uint8:
            raise ValueError(
                f"{self.path}: frame {frame.index} is {image.dtype} {image.shape}, expected "
                f"uint8 {self.source.shape}"
            )
        while True:
            try:
                self._queue.put((frame, np.ascontiguousarray(image)), timeout=0.1)
                return
            except queue.Full:
                self._raise_pending()

    # ----------------------------------------------------------------------------- thread

    def _run(self) -> None:
        av = _av()
        output = None
        audio_source = None
        try:
            output = av.open(str(self._temporary), mode="w", format=self.format)
            video = output.add_stream(self.codec, rate=self.source.frame_rate)
            video.width, video.height = self.source.width, self.source.height
            video.pix_fmt = "yuv420p"
            video.time_base = self.source.time_base
            video.codec_context.time_base = self.source.time_base
            video.options = dict(self.options)
            audio_streams, packets = {}, iter(())
            if self.audio == "copy" and self.source.audio:
                audio_source = _open_input(self.source.path)
                for stream in audio_source.streams.audio:
                    try:
                        audio_streams[stream.index] = output.add_stream_from_template(stream)
                    except (av.error.FFmpegError, ValueError) as error:
                        raise VideoError(
                            self.path,
                            f"cannot copy the {stream.codec_context.name} audio "
                            f"into {self.format} ({error}); use audio='drop'",
                        ) from None
                    audio_streams[stream.index].metadata.clear()
                packets = audio_source.demux(*audio_source.streams.audio)
            audio = _AudioCopier(output, audio_streams, packets, ahead=not self.trim_audio)
            frame_seconds = float(1 / self.source.frame_rate)
            end = None
            while True:
                item = self._queue.get()
                if item is _END:
                    break
                frame, image = item
                encoded = av.VideoFrame.from_ndarray(image, format="rgb24")
                pts = frame.pts
                if pts is None:  # no timestamps in the source: one frame per 1/rate
                    pts = round(frame.index / self.source.frame_rate / self.source.time_base)
                encoded.pts = pts
                encoded.time_base = self.source.time_base
                start = float(pts * self.source.time_base)
                audio.until(start)
                end = start + frame_seconds if end is None else max(end, start + frame_seconds)
                for packet in video.encode(encoded):
                    output.mux(packet)
                self.frames_written += 1
            for packet in video.encode(None):
                output.mux(packet)
            audio.until(end if self.trim_audio else None, last=True)
            output.close()
            output = None
        except av.error.FFmpegError as error:
            self._error = VideoError(self.path, f"could not be written ({error})")
        except BaseException as error:
            self._error = error
        finally:
            if output is not None:
                try:
                    output.close()
                except Exception:  # noqa: BLE001 - the first error is the one reported
                    pass
            if audio_source is not None:
                audio_source.close()

    # ----------------------------------------------------------------------------- finish

    def close(self) -> None:
        """Finish encoding, then move the complete file to its final name."""
        if self._closed:
            return
        self._raise_pending()
        self._queue.put(_END)
        self._thread.join()
        self._closed = True
        if self._error is not None:
            error, self._error = self._error, None
            self._temporary.unlink(missing_ok=True)
            raise error
        if self.frames_written == 0:
            self._temporary.unlink(missing_ok=True)
            raise VideoError(self.path, "no frame was written; the file was not created")
        os.replace(self._temporary, self.path)

    def abort(self) -> None:
        """Stop and delete the partial file; the final name is never created."""
        if not self._closed:
            self._closed = True
            # Unblock the thread: drop what it has not taken yet, then tell it to stop.
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._queue.put(_END)
            self._thread.join()
        self._temporary.unlink(missing_ok=True)


class _AudioCopier:
    """Copies audio packets into the output in step with the video.

    ``until(t)`` copies the packets that start before ``t`` seconds (half a second more
    when ``ahead``, which keeps the muxer's interleaving queue short); with ``last=True``
    the rest are dropped, and ``t=None`` copies everything left.
    """

    def __init__(self, output, streams: dict, packets, *, ahead: bool):
        self.output = output
        self.streams = streams
        self.packets = packets
        self.lead = 0.5 if ahead else 0.0
        self.held = None
        self.copied = 0

    def until(self, time: float | None, *, last: bool = False) -> None:
        horizon = None if time is None else time + (0.0 if last else self.lead)
        while True:
            packet = self.held or next(self.packets, None)
            self.held = None
            if packet is None:
                return
            if packet.dts is None or packet.size == 0:
                continue  # the demuxer's empty flush packets
            start = float(packet.pts * packet.time_base) if packet.pts is not None else None
            if horizon is not None and start is not None and start >= horizon:
                self.held = packet
                return
            packet.stream = self.streams[packet.stream_index]
            self.output.mux(packet)
            self.copied += 1
