"""Video data: sources, decoding, clip cache, transforms, pre-flight checks and loaders."""

from .cache import ClipCache, default_cache_dir
from .check import CheckReport, check_videos
from .decode import VideoError, VideoInfo, decode_strided, probe
from .prepare import PreparedData, prepare_videos
from .sources import VIDEO_EXTENSIONS, Problem, VideoItem, VideoSet, load_videos

__all__ = [
    "VIDEO_EXTENSIONS",
    "CheckReport",
    "ClipCache",
    "PreparedData",
    "Problem",
    "VideoError",
    "VideoInfo",
    "VideoItem",
    "VideoSet",
    "check_videos",
    "decode_strided",
    "default_cache_dir",
    "load_videos",
    "prepare_videos",
    "probe",
]
