"""Machine figures beside CPU, RAM and GPUs: per-core CPU, network, temperatures, disks.

Plain Python (psutil). The per-tick readers are cheap (``/proc/stat``,
``/proc/net/dev``, ``/sys/class/hwmon``) and run in the sampler's system probe.
Filesystems and model-cache sizes are read by :class:`DiskWatcher` in its own
daemon thread at a slow rate, never on the refresh path: a hung network home
or a cache of a million files cannot slow a refresh. Anything that cannot be
read is None, never a crash; a failure is logged once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil

from dgx_spark import format as fmt
from dgx_spark.health import log_once

logger = logging.getLogger(__name__)

# A filesystem above this share used gets the warning colour.
DISK_WARNING_PERCENT = 90.0
# A temperature this close (°C) to its sensor's "high" is a warning; this close to "critical", too.
TEMP_NEAR_HIGH_C = 5.0
TEMP_NEAR_CRITICAL_C = 15.0
# At most this many temperature sensors are listed (the hottest reading of each).
MAX_SENSORS = 8
# How often the watcher reads free space, and walks the model caches (seconds).
DISK_FREE_SECONDS = 10.0
CACHE_SCAN_SECONDS = 600.0
# A cache walk stops after this many entries (reported as partial).
MAX_WALK_ENTRIES = 2_000_000
# At most this many Ollama manifests are read.
MAX_MANIFESTS = 10_000
# How many of a cache's biggest models are listed.
TOP_MODELS = 5

# --------------------------------------------------------------------------- per-core CPU
class PerCoreMeter:
    """Use of each logical CPU between two calls (0-100), from its own ``cpu_times`` deltas."""

    def __init__(self) -> None:
        """Start with no previous reading."""
        self._last: list[Any] | None = None

    def __call__(self) -> list[float | None] | None:
        """Percent busy per core since the previous call; None on the first call or when unreadable."""
        try:
            times = psutil.cpu_times(percpu=True)
        except Exception as exc:  # noqa: BLE001 - unreadable is None
            log_once(logger, "host:percpu", "per-core CPU times unreadable: %s", exc)
            return None
        last, self._last = self._last, list(times)
        if last is None or len(last) != len(times):
            return None
        result: list[float | None] = []
        for now, before in zip(times, last, strict=True):
            total = sum(now) - sum(before)
            idle = (now.idle + getattr(now, "iowait", 0.0)) - (before.idle + getattr(before, "iowait", 0.0))
            result.append(None if total <= 0 else round(max(0.0, min(100.0, 100.0 * (total - idle) / total)), 1))
        return result


# --------------------------------------------------------------------------- network
def physical_interfaces(names: Iterable[str], sys_class_net: str = "/sys/class/net") -> list[str]:
    """The interfaces backed by a device (NICs, Wi-Fi); bridges, veths and tunnels have none.

    Counting only these avoids counting a container's traffic twice (veth,
    bridge and NIC). Where none has a device (inside a container) every
    interface but loopback counts.
    """
    names = [name for name in names if name != "lo"]
    physical = [name for name in names if os.path.exists(os.path.join(sys_class_net, name, "device"))]
    return sorted(physical or names)


class NetworkMeter:
    """Receive and send throughput of the machine's interfaces between two calls."""

    def __init__(self) -> None:
        """Start with no previous reading."""
        self._last: tuple[float, int, int, tuple[str, ...]] | None = None

    def __call__(self, now: float) -> dict[str, Any]:
        """``rx/tx_bytes_per_second`` (None on the first call or after a counter reset), totals, interfaces."""
        empty: dict[str, Any] = {
            "rx_bytes_per_second": None,
            "tx_bytes_per_second": None,
            "rx_bytes": None,
            "tx_bytes": None,
            "interfaces": [],
        }
        try:
            counters = psutil.net_io_counters(pernic=True)
        except Exception as exc:  # noqa: BLE001
            log_once(logger, "host:net", "network counters unreadable: %s", exc)
            return empty
        names = tuple(physical_interfaces(counters))
        rx = sum(counters[name].bytes_recv for name in names)
        tx = sum(counters[name].bytes_sent for name in names)
        last, self._last = self._last, (now, rx, tx, names)
        rx_rate = tx_rate = None
        if last is not None and last[3] == names and now > last[0]:
            span = now - last[0]
            if rx >= last[1]:
                rx_rate = round((rx - last[1]) / span, 1)
            if tx >= last[2]:
                tx_rate = round((tx - last[2]) / span, 1)
        return {
            "rx_bytes_per_second": rx_rate,
            "tx_bytes_per_second": tx_rate,
            "rx_bytes": rx,
            "tx_bytes": tx,
            "interfaces": list(names),
        }


# --------------------------------------------------------------------------- temperatures
def temperature_level(current: float, high: float | None, critical: float | None) -> str:
    """``critical`` at or past the sensor's critical point, ``warning`` near high/critical, else ``ok``."""
    if critical is not None and current >= critical:
        return "critical"
    if high is not None and current >= high - TEMP_NEAR_HIGH_C:
        return "warning"
    if critical is not None and current >= critical - TEMP_NEAR_CRITICAL_C:
        return "warning"
    return "ok"


# GPU temperatures (°C) at warning / critical level. NVML's own slowdown threshold is not read;
# these are typical: most NVIDIA GPUs start slowing down around 85-90 °C.
GPU_TEMP_WARNING_C = 83.0
GPU_TEMP_CRITICAL_C = 90.0


def gpu_temperature_level(temperature: float | None) -> str:
    """``ok``, ``warning`` (near the usual slowdown point) or ``critical`` for a GPU temperature."""
    if temperature is None or temperature < GPU_TEMP_WARNING_C:
        return "ok"
    return "critical" if temperature >= GPU_TEMP_CRITICAL_C else "warning"


def _limit(value: Any) -> float | None:
    """A sensor's high/critical point, None when absent or nonsense (0, negative, absurd)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if 0.0 < number < 250.0 else None


def read_temperatures(
    reader: Callable[[], dict[str, list[Any]]] | None = None,
) -> list[dict[str, Any]] | None:
    """The hottest reading of each temperature sensor the machine exposes.

    Returns:
        Up to ``MAX_SENSORS`` entries ``{sensor, label, current_c, high_c,
        critical_c, level}``, hottest first; ``[]`` when the machine exposes
        none; None when they cannot be read (no support, an error).
    """
    read = reader or getattr(psutil, "sensors_temperatures", None)
    if read is None:
        return None
    try:
        sensors = read()
    except Exception as exc:  # noqa: BLE001
        log_once(logger, "host:temperatures", "temperature sensors unreadable: %s", exc)
        return None
    result: list[dict[str, Any]] = []
    for chip, entries in (sensors or {}).items():
        best: dict[str, Any] | None = None
        for entry in entries:
            current = getattr(entry, "current", None)
            if current is None or not -50.0 < float(current) < 250.0:
                continue
            if best is None or float(current) > best["current_c"]:
                high, critical = _limit(getattr(entry, "high", None)), _limit(getattr(entry, "critical", None))
                best = {
                    "sensor": str(chip),
                    "label": str(getattr(entry, "label", "") or chip),
                    "current_c": round(float(current), 1),
                    "high_c": high,
                    "critical_c": critical,
                    "level": temperature_level(float(current), high, critical),
                }
        if best is not None:
            result.append(best)
    result.sort(key=lambda item: -item["current_c"])
    return result[:MAX_SENSORS]


# --------------------------------------------------------------------------- disks and model caches
def hf_home(env: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    """The Hugging Face cache: ``HF_HOME``, else ``$XDG_CACHE_HOME/huggingface``, else ``~/.cache/huggingface``."""
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "huggingface"
    return Path.home() / ".cache" / "huggingface"


def ollama_models(env: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    """Ollama's model folder: ``OLLAMA_MODELS``, else ``~/.ollama/models``."""
    if env.get("OLLAMA_MODELS"):
        return Path(env["OLLAMA_MODELS"]).expanduser()
    return Path.home() / ".ollama" / "models"


@dataclasses.dataclass(frozen=True)
class Place:
    """A folder whose filesystem matters, or a model cache to size."""

    key: str
    label: str
    path: Path


def default_places(data_dir: Path) -> tuple[list[Place], list[Place]]:
    """The folders whose free space is shown, and the model caches that are sized."""
    hf, ollama = hf_home(), ollama_models()
    filesystems = [
        Place("data", "data", data_dir),
        Place("home", "home", Path.home()),
        Place("huggingface", "Hugging Face cache", hf),
    ]
    caches = [Place("huggingface", "Hugging Face", hf), Place("ollama", "Ollama", ollama)]
    return filesystems, caches


def _existing(path: Path) -> Path | None:
    """``path``, or its nearest existing parent (a cache not made yet lives on its parent's disk)."""
    for candidate in (path, *path.parents):
        try:
            os.stat(candidate)
        except OSError:
            continue
        return candidate
    return None


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem ``path`` is on (walk up until the device changes)."""
    path = Path(os.path.realpath(path))
    device = os.stat(path).st_dev
    while path != path.parent:
        try:
            if os.stat(path.parent).st_dev != device:
                return path
        except OSError:
            return path
        path = path.parent
    return path


def read_filesystems(places: Iterable[Place]) -> list[dict[str, Any]]:
    """Free space of each filesystem the places are on, one entry per filesystem (labels merged)."""
    found: dict[int, dict[str, Any]] = {}
    for place in places:
        where = _existing(place.path)
        if where is None:
            continue
        try:
            device = os.stat(where).st_dev
            if device in found:
                found[device]["labels"].append(place.label)
                found[device]["paths"].append(str(place.path))
                continue
            usage = psutil.disk_usage(str(where))
            mount = str(mount_point(where))
        except Exception as exc:  # noqa: BLE001
            log_once(logger, f"host:disk:{place.key}", "free space of %s unreadable: %s", place.path, exc)
            continue
        found[device] = {
            "mount": mount,
            "labels": [place.label],
            "paths": [str(place.path)],
            "total_bytes": int(usage.total),
            "used_bytes": int(usage.used),
            "free_bytes": int(usage.free),
            "percent": round(float(usage.percent), 1),
            "warning": float(usage.percent) > DISK_WARNING_PERCENT,
        }
    return list(found.values())


class _Walk:
    """One cache walk: sizes counted once per inode, symlinks never followed."""

    def __init__(self, max_entries: int) -> None:
        self.seen: set[tuple[int, int]] = set()
        self.entries = 0
        self.max_entries = max_entries
        self.unreadable = 0

    @property
    def partial(self) -> bool:
        return self.entries >= self.max_entries

    def size(self, path: str) -> int:
        """Bytes under ``path`` (a file or a folder), without following symlinks."""
        try:
            info = os.lstat(path)
        except OSError:
            self.unreadable += 1
            return 0
        if not stat.S_ISDIR(info.st_mode):
            return self._count(info)
        total = 0
        stack = [path]
        while stack and not self.partial:
            current = stack.pop()
            try:
                with os.scandir(current) as entries:
                    for entry in entries:
                        self.entries += 1
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                stack.append(entry.path)
                            else:
                                total += self._count(entry.stat(follow_symlinks=False))
                        except OSError:
                            self.unreadable += 1
            except OSError:
                self.unreadable += 1
        return total

    def _count(self, info: os.stat_result) -> int:
        if not stat.S_ISREG(info.st_mode):
            return 0
        key = (info.st_dev, info.st_ino)
        if key in self.seen:
            return 0
        self.seen.add(key)
        return int(info.st_size)


def _hf_name(folder: str) -> str | None:
    """``models--org--name`` -> ``org/name``; datasets and spaces say so; else None."""
    kind, _, rest = folder.partition("--")
    if not rest:
        return None
    name = rest.replace("--", "/")
    return {"models": name, "datasets": f"dataset {name}", "spaces": f"space {name}"}.get(kind)


def _read_small_file(path: Path, limit: int = 1 << 20) -> bytes | None:
    """A regular file's bytes, or None: never follows a link, never blocks on a FIFO or device."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def _ollama_models(root: Path) -> list[dict[str, Any]]:
    """Ollama's models and their sizes, from its manifests (layer sizes)."""
    manifests = root / "manifests"
    models: list[dict[str, Any]] = []
    if not manifests.is_dir():
        return models
    seen = 0
    for folder, _dirs, files in os.walk(manifests):
        for file in files:
            seen += 1
            if seen > MAX_MANIFESTS:
                return models
            path = Path(folder) / file
            try:
                raw = _read_small_file(path)
                if raw is None:
                    continue
                manifest = json.loads(raw.decode("utf-8"))
                layers = [*manifest.get("layers", []), manifest.get("config") or {}]
                size = sum(int(layer.get("size", 0)) for layer in layers if isinstance(layer, dict))
            except (OSError, ValueError, TypeError, AttributeError):
                continue
            relative = path.relative_to(manifests).parts
            # registry/namespace/model/tag: "library" models go by their short name.
            name = ":".join(relative[-2:]) if len(relative) >= 2 else relative[-1]
            if len(relative) >= 3 and relative[-3] != "library":
                name = f"{relative[-3]}/{name}"
            models.append({"name": fmt.valid_text(name), "size_bytes": size})  # a file name may not be UTF-8
    return models


def size_cache(place: Place, max_entries: int = MAX_WALK_ENTRIES) -> dict[str, Any]:
    """Walk one model cache: its size and its biggest models.

    Returns:
        ``{key, label, path, exists, size_bytes, largest, partial, error, scanned_at}``;
        ``size_bytes`` is None when the folder is missing or unreadable.
    """
    result: dict[str, Any] = {
        "key": place.key,
        "label": place.label,
        "path": str(place.path),
        "exists": False,
        "size_bytes": None,
        "largest": [],
        "partial": False,
        "error": None,
        "scanned_at": time.time(),
    }
    try:
        root = os.path.realpath(place.path)  # the cache itself may be a link to another disk
        if not os.path.isdir(root):
            return result
        result["exists"] = True
        walk = _Walk(max_entries)
        total = 0
        named: list[dict[str, Any]] = []
        with os.scandir(root) as entries:
            children = list(entries)
        for entry in children:
            if place.key == "huggingface" and entry.name == "hub" and entry.is_dir(follow_symlinks=False):
                with os.scandir(entry.path) as hub:
                    for item in list(hub):
                        size = walk.size(item.path)
                        total += size
                        name = _hf_name(item.name)
                        if name:
                            named.append({"name": fmt.valid_text(name), "size_bytes": size})
            else:
                total += walk.size(entry.path)
        if place.key == "ollama":
            named = _ollama_models(Path(root))
        named.sort(key=lambda item: -item["size_bytes"])
        result.update(size_bytes=total, largest=named[:TOP_MODELS], partial=walk.partial)
        if walk.unreadable:
            result["error"] = f"{walk.unreadable} entries could not be read"
    except Exception as exc:  # noqa: BLE001 - a cache we cannot read is unknown, not a crash
        log_once(logger, f"host:cache:{place.key}", "model cache %s unreadable: %s", place.path, exc)
        result.update(size_bytes=None, error=str(exc)[:200])
    return result


class DiskWatcher:
    """Reads free space and model-cache sizes in its own daemon thread; the probe reads ``latest``."""

    def __init__(
        self,
        filesystems: list[Place],
        caches: list[Place],
        *,
        free_seconds: float = DISK_FREE_SECONDS,
        cache_seconds: float = CACHE_SCAN_SECONDS,
    ) -> None:
        """Watch ``filesystems`` (free space) and ``caches`` (sizes); ``start`` begins."""
        self.filesystems = filesystems
        self.caches = caches
        self.free_seconds = free_seconds
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._disks: list[dict[str, Any]] | None = None
        self._disks_at: float | None = None
        self._caches: list[dict[str, Any]] | None = None
        self._caches_at: float | None = None

    def start(self) -> None:
        """Start the thread (once)."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="dgx-disk-watcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (a walk in progress finishes its current folder first)."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def scan_filesystems(self) -> None:
        """Read the free space now."""
        disks = read_filesystems(self.filesystems)
        with self._lock:
            self._disks, self._disks_at = disks, time.time()

    def scan_caches(self) -> None:
        """Walk the model caches now (slow on big caches)."""
        caches = [size_cache(place) for place in self.caches]
        caches.sort(key=lambda item: -(item["size_bytes"] or 0))
        with self._lock:
            self._caches, self._caches_at = caches, time.time()

    def latest(self) -> dict[str, Any]:
        """The last readings: ``filesystems`` and ``model_caches`` (None until first read)."""
        with self._lock:
            return {
                "filesystems": self._disks,
                "filesystems_read_at": self._disks_at,
                "model_caches": self._caches,
                "model_caches_read_at": self._caches_at,
            }

    def _run(self) -> None:
        next_cache = 0.0
        while not self._stop.is_set():
            try:
                self.scan_filesystems()
                if time.monotonic() >= next_cache:
                    self.scan_caches()
                    next_cache = time.monotonic() + self.cache_seconds
            except Exception as exc:  # noqa: BLE001 - the thread must live on
                log_once(logger, "host:disk-watcher", "disk watcher failed: %s", exc)
            self._stop.wait(self.free_seconds)
