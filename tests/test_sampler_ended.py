"""The sampler keeps ended discovered operations for a while, unless a probe took them off the list."""

from __future__ import annotations

from dgx_spark.collector.model import Operation
from dgx_spark.collector.sampler import SampleContext, Sampler


def op(op_id: str, **kw: object) -> Operation:
    defaults: dict[str, object] = {"type": "program", "name": op_id, "status": "running",
                                   "source": "discovered", "started_at_ts": 1000.0}
    defaults.update(kw)
    return Operation(id=op_id, **defaults)  # type: ignore[arg-type]


class HideNamed:
    """A probe that takes ended operations named ``hidden`` off the list (as the churn probe does)."""

    name = "hide"

    def sample(self, ctx: SampleContext) -> None:
        ctx.operations = [o for o in ctx.operations if o.is_live or not o.name.startswith("hidden")]


def test_ended_operations_stay_listed_but_hidden_ones_are_forgotten() -> None:
    live: list[Operation] = [op("kept"), *(op(f"hidden-{i}") for i in range(100))]
    sampler = Sampler(lambda now: list(live), [HideNamed()], ended_ttl=600)
    sampler.sample_once()
    live.clear()
    snapshot = sampler.sample_once()
    assert [o.id for o in snapshot.operations] == ["kept"]
    assert snapshot.operations[0].status == "stopped"
    # Nothing held for the hidden ones: memory follows what is listed, not the churn rate.
    assert list(sampler._ended) == ["kept"]
    assert [o.id for o in sampler.sample_once().operations] == ["kept"]


def test_peak_memory_is_per_run() -> None:
    from dgx_spark.events.detector import EventDetector, Transition

    seen: list[Transition] = []
    ops: list[Operation] = [op("a")]
    sampler = Sampler(lambda now: list(ops), [EventDetector(seen.append)])
    sampler.sample_once()
    ops[:] = [op("a", source="launched", memory_bytes=9000)]
    sampler.sample_once()
    ops[:] = [op("a", source="launched", status="failed", exit_code=1, ended_at_ts=2000.0)]
    sampler.sample_once()
    ops[:] = [op("a", source="launched", run=2, memory_bytes=100)]
    sampler.sample_once()
    ops[:] = [op("a", source="launched", run=2, status="failed", exit_code=1, ended_at_ts=3000.0)]
    sampler.sample_once()
    peaks = [t.peak_memory_bytes for t in seen if t.kind == "failed"]
    assert peaks == [9000, 100]
