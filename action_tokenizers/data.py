"""Read a LeRobot v3 dataset into action chunks ``(n, h, d)`` or whole episodes, plus camera frames.

Why not ``LeRobotDataset(...)[i]``: indexing decodes every camera of every frame, the constructor
wants the video files on disk (it tries to download them when they are missing), and importing
``lerobot.datasets`` costs seconds (it pulls in torchvision's models) for what is a few parquet
files. A local root is therefore read with pyarrow, following LeRobot's v3 layout:
``meta/info.json`` (fps, features, ``video_path``), ``meta/episodes/*/*.parquet`` (one row per
episode, with each video's file and start time), ``meta/tasks.parquet`` and ``data/*/*.parquet``,
of which only the requested columns are read (episode filter pushed down). Camera frames are read
only for the ``image_keys`` asked for, and only at chunk starts: ``image`` features are PNG/JPEG
bytes inside the parquet files (decoded with Pillow), ``video`` features are decoded with LeRobot's
own ``decode_video_frames`` (imported then, not before). A Hub id (``owner/name`` that is not a
local directory) becomes a local snapshot of its ``meta/`` and ``data/`` (never videos) through
``action_tokenizers.hub.resolve_dataset``, the one way in every command shares, and is then read
like any local root.

Usage::

    cs = load_chunks("../shared/data/so101_record_test", chunk_size=10, state_key="observation.state")
    cs.actions.shape  # (n, 10, 6) float64, raw units; chunks never cross an episode boundary
    cs = load_chunks("runs/vision/demos", image_keys=("observation.images.corner2",))
    cs.images["observation.images.corner2"].shape  # (n, H, W, 3) uint8, the frame at each chunk start
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from action_tokenizers.io import read_json

__all__ = ["ChunkSet", "EpisodeData", "PAD_MODES", "load_chunks", "load_episodes"]

PAD_MODES = ("drop", "last")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_NUMERIC_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")
_IMAGE_DTYPES = ("image", "video")
_ARROW_NUMPY = {"halffloat": "float16", "float": "float32", "double": "float64"}  # Arrow type name -> NumPy


@dataclass
class EpisodeData:
    """One episode: ``arrays[key]`` is ``(T, k)`` float64 in frame order; ``task`` its first frame's task."""

    index: int
    arrays: dict[str, np.ndarray]
    task: str | None = None

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values()))) if self.arrays else 0


@dataclass
class ChunkSet:
    """Action chunks cut from episodes, with where each came from.

    ``mask[i, j]`` is False where step j of chunk i lies past its episode's end and repeats the
    episode's last action (only with ``pad="last"``); ``frame_index`` is the chunk's first frame.
    """

    actions: np.ndarray  # (n, h, d) float64, raw units
    mask: np.ndarray  # (n, h) bool
    episode_index: np.ndarray  # (n,) int64
    frame_index: np.ndarray  # (n,) int64
    fps: float
    states: np.ndarray | None = None  # (n, s) float64, state at each chunk's first frame
    tasks: list[str] | None = None  # n task strings
    action_names: list[str] | None = None
    stats: dict[str, Any] | None = None  # the dataset's meta/stats.json, or {}
    images: dict[str, np.ndarray] | None = None  # image key -> (n, H, W, C) uint8 at each chunk's first frame

    def __post_init__(self) -> None:
        n = self.actions.shape[0]
        if self.actions.ndim != 3 or self.mask.shape != self.actions.shape[:2]:
            raise ValueError(
                f"actions must be (n, h, d) with mask (n, h); got {self.actions.shape} and {self.mask.shape}"
            )
        for name in ("episode_index", "frame_index"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},), got {getattr(self, name).shape}")
        if self.states is not None and self.states.shape[0] != n:
            raise ValueError(f"states must have {n} rows, got {self.states.shape}")
        if self.tasks is not None and len(self.tasks) != n:
            raise ValueError(f"tasks must have {n} entries, got {len(self.tasks)}")
        for key, frames in (self.images or {}).items():
            if frames.ndim != 4 or frames.shape[0] != n or frames.dtype != np.uint8:
                raise ValueError(f"images[{key!r}] must be ({n}, H, W, C) uint8, got {frames.shape} {frames.dtype}")
        if self.stats is None:
            self.stats = {}

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @property
    def chunk_size(self) -> int:
        return int(self.actions.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[2])


# --------------------------------------------------------------------------- public entry points
def load_chunks(
    dataset: str | Path,
    chunk_size: int = 10,
    stride: int = 1,
    action_key: str = "action",
    pad: str = "drop",
    state_key: str | None = None,
    with_tasks: bool = False,
    episodes: list[int] | None = None,
    image_keys: tuple[str, ...] | list[str] = (),
) -> ChunkSet:
    """Cut every episode into chunks of ``chunk_size`` consecutive actions, one per ``stride`` frames.

    ``pad="drop"`` keeps only chunks that fit inside their episode; ``pad="last"`` starts a chunk at
    every ``stride``-th frame and fills the tail with the episode's last action (mask False).
    ``image_keys`` (``image`` or ``video`` features) adds ``images``: each chunk's first frame.
    """
    if chunk_size < 1 or stride < 1:
        raise ValueError(f"chunk_size and stride must be >= 1, got chunk_size={chunk_size}, stride={stride}")
    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
    keys = (action_key,) if state_key is None else (action_key, state_key)
    image_keys = tuple(image_keys)
    source = _open(dataset, keys, episodes, image_keys)
    eps = source.episodes(with_tasks)
    pieces = [_chunk_episode(ep, action_key, state_key, chunk_size, stride, pad) for ep in eps]
    pieces = [p for p in pieces if p is not None]
    if with_tasks:  # the task of each chunk's first frame (a task may change within an episode)
        for p in pieces:
            frame_tasks = source.frame_tasks[int(p["episode_index"][0])]
            p["tasks"] = [frame_tasks[i] for i in p["frame_index"].tolist()]
    if not pieces:
        longest = max(len(ep) for ep in eps)
        raise ValueError(
            f"no chunk of {chunk_size} actions fits in any episode of {source.name} with pad='drop' "
            f"(longest episode: {longest} frames); use a smaller --chunk-size or pad='last'"
        )
    _warn_if_all_padded(eps, chunk_size, pad, source.name)
    tasks = [t for p in pieces for t in p["tasks"]] if with_tasks else None
    starts = {int(p["episode_index"][0]): p["frame_index"] for p in pieces}
    images = {key: np.concatenate([source.frames(key, ep, f) for ep, f in starts.items()]) for key in image_keys}
    return ChunkSet(
        actions=np.concatenate([p["actions"] for p in pieces]),
        mask=np.concatenate([p["mask"] for p in pieces]),
        episode_index=np.concatenate([p["episode_index"] for p in pieces]),
        frame_index=np.concatenate([p["frame_index"] for p in pieces]),
        states=np.concatenate([p["states"] for p in pieces]) if state_key is not None else None,
        tasks=tasks,
        fps=source.fps,
        action_names=source.names(action_key),
        stats=source.stats(),
        images=images or None,
    )


def load_episodes(
    dataset: str | Path,
    keys: tuple[str, ...] | list[str] = ("action", "observation.state"),
    with_tasks: bool = True,
    episodes: list[int] | None = None,
) -> list[EpisodeData]:
    """Every selected episode as ``(T, k)`` float64 arrays per key, in episode order."""
    if not keys:
        raise ValueError("keys must name at least one feature, e.g. ('action',)")
    return _open(dataset, tuple(keys), episodes).episodes(with_tasks)


# --------------------------------------------------------------------------- chunking
def _warn_if_all_padded(eps: list, chunk_size: int, pad: str, name: str) -> None:
    """A chunk longer than every episode means every chunk is padded: say so, with the numbers."""
    longest = max((len(ep) for ep in eps), default=0)
    if pad == "last" and eps and chunk_size > longest:
        import warnings

        warnings.warn(f"chunk size {chunk_size} is longer than every episode of {name} (longest: {longest} frames, "
                      f"{len(eps)} episodes): every chunk is padded with the episode's last action; use a "
                      f"--chunk-size of at most {longest}", UserWarning, stacklevel=3)


def _chunk_episode(
    ep: EpisodeData, action_key: str, state_key: str | None, h: int, stride: int, pad: str
) -> dict[str, Any] | None:
    """Chunks of one episode (or None when none fits): index arithmetic, no copies per chunk."""
    actions = ep.arrays[action_key]  # (T, d)
    t = actions.shape[0]
    last_start = t - h if pad == "drop" else t - 1
    if last_start < 0:
        return None
    starts = np.arange(0, last_start + 1, stride, dtype=np.int64)  # (n,)
    steps = starts[:, None] + np.arange(h, dtype=np.int64)[None, :]  # (n, h)
    mask = steps < t
    return {
        "actions": actions[np.minimum(steps, t - 1)],  # (n, h, d)
        "mask": mask,
        "episode_index": np.full(len(starts), ep.index, dtype=np.int64),
        "frame_index": starts,
        "states": ep.arrays[state_key][starts] if state_key is not None else None,
    }


# --------------------------------------------------------------------------- reading
class _Source:
    """The numeric columns of one LeRobot v3 dataset, plus its metadata (``_LocalMeta`` or LeRobot's)."""

    def __init__(self, name: str, meta: Any, table: Any, keys: tuple[str, ...], stats_path: Path) -> None:
        self.name, self.meta, self.table, self.keys, self._stats_path = name, meta, table, keys, stats_path
        self.frame_tasks: dict[int, list[str]] = {}  # filled by episodes(with_tasks=True)
        self._rows: dict[int, np.ndarray] = {}  # episode -> table rows in frame order (filled by episodes())

    @property
    def fps(self) -> float:
        return float(self.meta.fps)

    def frames(self, key: str, episode: int, frame_index: np.ndarray) -> np.ndarray:
        """``(k, H, W, C)`` uint8: frames ``frame_index`` of ``episode`` for an image or video feature."""
        feature = self.meta.features[key]
        if feature["dtype"] == "video":
            frames = _decode_video(self, key, episode, frame_index)
        else:
            rows = self._rows[episode][frame_index]
            frames = _decode_images(self.table.column(key).take(rows).to_pylist(), key, self.name)
        expected = tuple(int(x) for x in feature["shape"])
        if frames.shape[1:] != expected:
            raise ValueError(f"{key!r} of {self.name} holds frames of shape {frames.shape[1:]} but meta/info.json "
                             f"declares {expected}; the dataset is inconsistent")
        return frames

    def names(self, key: str) -> list[str] | None:
        """Per-dimension names from info.json (a list, or LeRobot's older ``{"motors": [...]}`` form)."""
        names = self.meta.features[key].get("names")
        if isinstance(names, dict) and len(names) == 1:
            names = next(iter(names.values()))
        if isinstance(names, list) and all(isinstance(n, str) for n in names):
            return list(names)
        return None

    def stats(self) -> dict[str, Any]:
        return read_json(self._stats_path, "stats file") if self._stats_path.is_file() else {}

    def episodes(self, with_tasks: bool) -> list[EpisodeData]:
        """Split the frame table into episodes (sorted by episode, then frame) and check for NaN."""
        ep_col = _column(self.table, "episode_index").astype(np.int64).reshape(-1)
        fr_col = _column(self.table, "frame_index").astype(np.int64).reshape(-1)
        if ep_col.size == 0:
            raise ValueError(f"{self.name} has no frames (no episodes selected or an empty dataset)")
        order = np.lexsort((fr_col, ep_col))
        ep_col, fr_col = ep_col[order], fr_col[order]
        columns = {k: _column(self.table, k).astype(np.float64).reshape(len(order), -1)[order] for k in self.keys}
        task_col = _column(self.table, "task_index").astype(np.int64).reshape(-1)[order] if with_tasks else None
        task_names = self._task_names() if with_tasks else {}
        ids, starts = np.unique(ep_col, return_index=True)
        ends = np.append(starts[1:], len(ep_col))
        out = []
        for idx, a, b in zip(ids.tolist(), starts.tolist(), ends.tolist(), strict=True):
            if not np.array_equal(fr_col[a:b], np.arange(b - a)):
                raise ValueError(
                    f"episode {idx} of {self.name} has frame_index values that are not 0..{b - a - 1} "
                    "(missing or duplicated frames); expected every frame of an episode exactly once"
                )
            self._rows[int(idx)] = order[a:b]
            arrays = {k: v[a:b] for k, v in columns.items()}
            for k, v in arrays.items():
                _check_finite(v, k, idx, fr_col[a:b], self.name)
            task = None
            if task_col is not None:
                unknown = set(task_col[a:b].tolist()) - set(task_names)
                if unknown:
                    raise ValueError(
                        f"episode {idx} of {self.name} uses task_index {sorted(unknown)} missing from "
                        f"meta/tasks.parquet (which has {sorted(task_names)})"
                    )
                self.frame_tasks[int(idx)] = [task_names[i] for i in task_col[a:b].tolist()]
                task = self.frame_tasks[int(idx)][0]
            out.append(EpisodeData(index=int(idx), arrays=arrays, task=task))
        return out

    def _task_names(self) -> dict[int, str]:
        tasks = self.meta.tasks
        if tasks is None:
            return {}
        if isinstance(tasks, dict):  # _LocalMeta
            return dict(tasks)
        return {int(i): str(name) for name, i in zip(tasks.index, tasks["task_index"], strict=True)}


def _open(dataset: str | Path, keys: tuple[str, ...], episodes: list[int] | None,
          image_keys: tuple[str, ...] = ()) -> _Source:
    """Resolve a local root or a Hub id, check the keys, and load only the frames of ``episodes``."""
    path = Path(dataset).expanduser()
    if not path.exists() and isinstance(dataset, str) and _HUB_ID.match(dataset):
        if image_keys:  # the snapshot holds meta/ and data/, not the videos
            raise ValueError(f"image_keys {list(image_keys)}: camera frames are read from a local root only; "
                             f"download {dataset} first (e.g. `hf download {dataset} --repo-type dataset`)")
        from action_tokenizers.hub import resolve_dataset

        try:
            path = resolve_dataset(dataset)
        except (FileNotFoundError, ConnectionError) as e:  # offline, missing repo or revision: say what was tried
            raise FileNotFoundError(f"{dataset!r} is not a local directory and could not be read from the Hugging "
                                    f"Face Hub ({e}); pass the local root of a LeRobot v3 dataset instead") from e
    if path.exists():
        root = _check_root(path)
        meta = _LocalMeta.read(root)
        _check_keys(meta.features, keys, str(root))
        _check_image_keys(meta.features, image_keys, str(root))
        episodes = _check_episodes(meta, episodes, str(root))
        table = _local_frames(root, meta, (*keys, *image_keys), episodes)
    else:
        raise FileNotFoundError(
            f"dataset {str(dataset)!r} is neither an existing directory nor a Hub id 'owner/name'; "
            "pass the root of a LeRobot v3 dataset (the folder holding meta/info.json)"
        )
    wanted = [*keys, *image_keys, "episode_index", "frame_index", "task_index", "timestamp"]
    table = table.select([c for c in dict.fromkeys(wanted) if c in table.column_names])
    return _Source(str(dataset), meta, table, keys, root / "meta" / "stats.json")


def _check_root(root: Path) -> Path:
    """A clear error for anything that is not a LeRobot v3 root, before LeRobot tries the Hub."""
    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        raise ValueError(
            f"{root} is not a LeRobot v3 dataset: {info_path} is missing "
            "(expected meta/info.json, meta/episodes/, meta/tasks.parquet and data/)"
        )
    version = str(read_json(info_path, "dataset info").get("codebase_version", "<missing>"))
    if not version.startswith("v3."):
        raise ValueError(
            f"{root} is a LeRobot dataset of codebase_version {version!r}, expected v3.x; convert it with "
            "`python -m lerobot.scripts.convert_dataset_v21_to_v30 --repo-id=...` (lerobot>=0.4)"
        )
    return root


@dataclass
class _LocalMeta:
    """``meta/`` of a local LeRobot v3 root, read with pyarrow (the fields ``LeRobotDatasetMetadata`` has)."""

    root: Path
    info: dict[str, Any]
    episodes: Any  # pyarrow Table, one row per episode (meta/episodes/*/*.parquet)
    tasks: dict[int, str]

    @property
    def fps(self) -> float:
        return float(self.info["fps"])

    @property
    def features(self) -> dict[str, dict]:
        return self.info.get("features", {})

    @property
    def total_episodes(self) -> int:
        return int(self.info.get("total_episodes", 0))

    @classmethod
    def read(cls, root: Path) -> "_LocalMeta":
        import pyarrow as pa
        import pyarrow.parquet as pq

        info = read_json(root / "meta" / "info.json", "dataset info")
        files = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
        tasks_path = root / "meta" / "tasks.parquet"
        if info.get("total_episodes", 0) and (not files or not tasks_path.is_file()):
            raise ValueError(f"{root} has meta/info.json but its metadata is incomplete: "
                             "meta/episodes/*/*.parquet or meta/tasks.parquet is missing")
        episodes = None
        if files:
            columns = [c for c in pq.read_schema(files[0]).names if not c.startswith("stats/")]
            episodes = pa.concat_tables([_read_parquet(f, columns) for f in files])
        return cls(root=root, info=info, episodes=episodes, tasks=_read_tasks(tasks_path))

    def episode_row(self, episode: int) -> dict[str, Any]:
        ids = self.episodes.column("episode_index").to_numpy()
        return {k: v[0] for k, v in self.episodes.take(np.flatnonzero(ids == episode)[:1]).to_pydict().items()}


def _read_parquet(path: Path, columns: list[str] | None = None) -> Any:
    """One parquet file through ``ParquetFile`` (``pq.read_table`` imports pyarrow.dataset, hence pandas)."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).read(columns=columns)


def _read_tasks(path: Path) -> dict[int, str]:
    """``meta/tasks.parquet``: the task text is the (pandas) index column, ``task_index`` the id."""
    if not path.is_file():
        return {}
    table = _read_parquet(path)
    text = next(c for c in table.column_names if c != "task_index")
    return {int(i): str(t) for t, i in zip(table.column(text).to_pylist(), table.column("task_index").to_pylist())}


def _local_frames(root: Path, meta: _LocalMeta, columns: tuple[str, ...], episodes: list[int] | None) -> Any:
    """The requested columns of ``data/*/*.parquet`` (other cameras are never read), selected episodes only."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    files = sorted((root / "data").glob("*/*.parquet"))
    if not files:
        raise ValueError(f"{root} has no frames: no parquet files under {root / 'data'}")
    wanted = [*columns, "episode_index", "frame_index", "task_index", "timestamp"]
    tables = []
    for f in files:
        names = pq.read_schema(f).names
        table = _read_parquet(f, [c for c in dict.fromkeys(wanted) if c in names])
        if episodes is not None:
            table = table.filter(pc.is_in(table.column("episode_index"), value_set=pa.array(episodes, pa.int64())))
        tables.append(table)
    return pa.concat_tables(tables, promote_options="default")


def _check_keys(features: dict[str, dict], keys: tuple[str, ...], name: str) -> None:
    numeric = [k for k, ft in features.items() if ft.get("dtype") in _NUMERIC_DTYPES]
    for key in keys:
        if key not in features:
            hint = ""
            if key == "action":
                hint = " (datasets ported from other formats often use --action-key actions)"
            raise ValueError(f"feature {key!r} not in {name}; available numeric features: {numeric}{hint}")
        ft = features[key]
        if ft.get("dtype") not in _NUMERIC_DTYPES or len(ft.get("shape", ())) != 1:
            raise ValueError(
                f"feature {key!r} of {name} is {ft.get('dtype')} with shape {ft.get('shape')}; expected a numeric "
                f"vector such as {numeric}"
            )


def _check_image_keys(features: dict[str, dict], keys: tuple[str, ...], name: str) -> None:
    cameras = [k for k, ft in features.items() if ft.get("dtype") in _IMAGE_DTYPES]
    for key in keys:
        if key not in features or features[key].get("dtype") not in _IMAGE_DTYPES:
            raise ValueError(f"image key {key!r} is not an image or video feature of {name}; its camera keys: "
                             f"{cameras or 'none (collect with --cameras)'}")
        shape = tuple(features[key].get("shape", ()))
        if len(shape) != 3:
            raise ValueError(f"{key!r} of {name} has shape {shape}; expected (height, width, channels)")


def _decode_images(cells: list[Any], key: str, name: str) -> np.ndarray:
    """LeRobot ``image`` cells (``{"bytes": PNG/JPEG, "path": ...}``) -> ``(k, H, W, C)`` uint8."""
    import io

    from PIL import Image

    out = []
    for cell in cells:
        data = cell.get("bytes") if isinstance(cell, dict) else None
        if not data:
            raise ValueError(f"{key!r} of {name} has a frame without embedded image bytes ({cell!r:.80}); "
                             "re-save the dataset with LeRobot (finalize embeds the images)")
        image = np.asarray(Image.open(io.BytesIO(data)))
        out.append(image[..., None] if image.ndim == 2 else image)
    return np.stack(out)


def _decode_video(source: _Source, key: str, episode: int, frame_index: np.ndarray) -> np.ndarray:
    """Frames of one episode from its mp4, with LeRobot's decoder (timestamps as LeRobot computes them)."""
    from lerobot.datasets.video_utils import decode_video_frames

    meta = source.meta
    if not isinstance(meta, _LocalMeta):
        raise ValueError(f"video frames of {source.name} can only be read from a local root")
    row = meta.episode_row(episode)
    path = meta.root / meta.info["video_path"].format(video_key=key, chunk_index=int(row[f"videos/{key}/chunk_index"]),
                                                      file_index=int(row[f"videos/{key}/file_index"]))
    if not path.is_file():
        raise ValueError(f"{key!r} of {source.name} is a video feature but {path} is missing "
                         "(videos are often left out when only parquet is copied); ask for no image key, or fetch it")
    timestamps = (float(row[f"videos/{key}/from_timestamp"]) + np.asarray(frame_index) / source.fps).tolist()
    frames = decode_video_frames(path, timestamps, tolerance_s=0.5 / source.fps, backend=_video_backend(),
                                 return_uint8=True)  # (k, C, H, W) uint8
    return frames.permute(0, 2, 3, 1).contiguous().numpy()


def _video_backend() -> str:
    """torchcodec where its native libraries load, else PyAV (both are LeRobot's decoders)."""
    try:
        import torchcodec.decoders  # noqa: F401
    except Exception:  # noqa: BLE001 - a wheel whose FFmpeg libraries are missing raises at import
        return "pyav"
    return "torchcodec"


def _check_episodes(meta: Any, episodes: list[int] | None, name: str) -> list[int] | None:
    if meta.total_episodes == 0 or meta.episodes is None:
        raise ValueError(f"{name} is an empty dataset (0 episodes)")
    if episodes is None:
        return None
    column = meta.episodes["episode_index"]
    available = sorted(int(i) for i in (column.to_pylist() if hasattr(column, "to_pylist") else column))
    unknown = sorted(set(int(e) for e in episodes) - set(available))
    if unknown:
        raise ValueError(f"episodes {unknown} not in {name}; it has episode indices {_ranges(available)}")
    if not episodes:
        raise ValueError("episodes=[] selects nothing; pass None for all episodes")
    return sorted(set(int(e) for e in episodes))


def _ranges(ids: list[int]) -> str:
    return f"{ids[0]}..{ids[-1]}" if ids == list(range(ids[0], ids[-1] + 1)) else str(ids)


def _column(table: Any, key: str) -> np.ndarray:
    """One Arrow column as NumPy: fixed-size lists become ``(rows, k)`` without Python objects."""
    col = table.column(key).combine_chunks()
    if hasattr(col, "flatten") and col.type.__class__.__name__ in ("FixedSizeListType", "ListType", "LargeListType"):
        return _to_numpy(col.flatten()).reshape(len(col), -1)
    return _to_numpy(col)


def _to_numpy(array: Any) -> np.ndarray:
    """Arrow -> NumPy from the data buffer itself: pyarrow's ``to_numpy`` imports pandas (seconds, cold)."""
    import pyarrow as pa

    kind = _ARROW_NUMPY.get(str(array.type), str(array.type))
    if array.null_count == 0 and pa.types.is_boolean(array.type):  # bit-packed, least significant bit first
        bits = np.unpackbits(np.frombuffer(array.buffers()[1], dtype=np.uint8), bitorder="little")
        return bits[array.offset: array.offset + len(array)].astype(bool)
    if array.null_count == 0 and (pa.types.is_integer(array.type) or pa.types.is_floating(array.type)):
        return np.frombuffer(array.buffers()[1], dtype=np.dtype(kind), count=len(array), offset=array.offset *
                             np.dtype(kind).itemsize)
    return array.to_numpy(zero_copy_only=False)


def _check_finite(values: np.ndarray, key: str, episode: int, frames: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        row, dim = np.argwhere(bad)[0]
        raise ValueError(
            f"{key!r} of {name} is {values[row, dim]} at episode {episode}, frame {int(frames[row])}, "
            f"dimension {int(dim)}; expected finite values (clean or drop that episode with episodes=[...])"
        )
