"""The resources strip's text, from a snapshot's system facts (plain Python, no browser)."""

from __future__ import annotations

from typing import Any

from dgx_spark.collector.facts import (
    CpuFacts,
    Filesystem,
    HistoryFacts,
    ModelCache,
    NetworkFacts,
    SystemFacts,
    TemperatureReading,
)
from dgx_spark.state.system import system_view

GIB = 1 << 30


def test_strip_view_of_a_full_payload() -> None:
    caches: list[dict[str, Any]] = [
        {"key": "huggingface", "label": "Hugging Face", "path": "/h/.cache/huggingface", "exists": True,
         "size_bytes": 20 * GIB, "largest": [{"name": "acme/big", "size_bytes": 15 * GIB}],
         "partial": False, "error": None, "scanned_at": 1.0},
        {"key": "ollama", "label": "Ollama", "path": "/h/.ollama/models", "exists": False,
         "size_bytes": None, "largest": [], "partial": False, "error": None, "scanned_at": 1.0},
    ]
    facts = SystemFacts(
        cpu=CpuFacts(percent=50.0, count=4, per_core_percent=(0.4, 99.6, None, 50.0)),
        network=NetworkFacts(rx_bytes_per_second=1536.0, tx_bytes_per_second=0.0, rx_bytes=1, tx_bytes=1,
                             interfaces=("eth0",)),
        temperatures=(TemperatureReading.from_host({"sensor": "coretemp", "label": "Package id 0", "current_c": 96.4,
                              "high_c": 100.0, "critical_c": 105.0, "level": "warning"}),),
        disks=(Filesystem(mount="/", labels=("data", "home"), paths=("/d", "/h"), total_bytes=100 * GIB,
                          used_bytes=95 * GIB, free_bytes=5 * GIB, percent=95.0, warning=True),),
        model_caches=tuple(ModelCache.from_host(cache) for cache in caches),
        history=HistoryFacts(at=(1, 2, 3), network_rx_bytes_per_second=(None, 10.0, 20.0),
                             network_tx_bytes_per_second=(None, 0.0, 0.0), temperature_max_c=(90.0, 95.0, 96.4)),
    )
    view = system_view(facts)
    assert view.core_percents == (0, 100, 0, 50)
    assert (view.net_rx_text, view.net_tx_text) == ("1.5 KiB/s", "0 B/s")
    assert view.net_points[0] != "" and view.temp_points != ""
    [disk] = view.disks
    assert disk.labels_text == "data · home"
    assert disk.free_text == "5.0 GiB free of 100.0 GiB"
    assert (disk.percent, disk.warning) == (95, True)
    hf, ollama = view.caches
    assert (hf.size_text, hf.models_text) == ("20.0 GiB", "acme/big 15.0 GiB")
    assert ollama.size_text == "not present"
    [temp] = view.temps
    assert (temp.value_text, temp.level) == ("96 °C", "warning")
    assert "critical 105 °C" in temp.title


def test_strip_view_of_an_empty_payload_is_blank_not_a_crash() -> None:
    assert system_view(None) == system_view(SystemFacts())
    view = system_view(None)
    assert view.core_percents == () and view.disks == () and view.caches == () and view.temps == ()
    assert view.net_rx_text == "" and view.net_points == ("", "")


def test_gpu_temperature_colour_near_the_usual_slowdown_point() -> None:
    from dgx_spark.state.system import gpu_temperature_level

    assert [gpu_temperature_level(t) for t in (None, 60.0, 84.0, 91.0)] == ["ok", "ok", "warning", "critical"]
