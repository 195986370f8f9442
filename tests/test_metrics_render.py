"""The metrics text on its own (the live endpoint is tested in
test_daemon_auto.py and, with promtool and Prometheus, in
test_metrics_prometheus.py): apply results, bounded label sets, the lateness
histogram's cumulative buckets, label escaping."""

from __future__ import annotations

from hosttune.agent.service.histogram import Histogram
from hosttune.agent.service.metrics import DaemonMetrics, apply_result, render


def _metrics(**over: object) -> DaemonMetrics:
    lateness = Histogram()
    for seconds in (0.001, 0.004, 0.02, 3.0, 20.0):
        lateness.observe(seconds)
    base: dict[str, object] = dict(
        version="1.2", mode="auto", workload="training", confidence=0.75,
        classes=("idle", "training", "unknown"), workload_changes=2,
        roles={"unassigned": 3, "pid-4242": 1}, role_names=("training", "unassigned"),
        applies={"applied": 4, "refused": 1}, reverts={"auto": 1}, knobs_refused=2,
        knobs_admin_owned=1, knobs_advised=3, knobs_recommended=5, drift=None, samples=5,
        sample_errors=0, missed_ticks=1, lateness=lateness, started_wall=1.7e9)
    base.update(over)
    return DaemonMetrics(**base)  # type: ignore[arg-type]


def _samples(text: str) -> dict[str, str]:
    return dict(ln.rsplit(" ", 1) for ln in text.splitlines() if not ln.startswith("#"))


def test_apply_result() -> None:
    assert apply_result({"ok": True}) == "applied"
    assert apply_result({"ok": False, "refused": ["sysctl:vm.swappiness"]}) == "refused"
    assert apply_result({"ok": False, "refused": []}) == "failed"
    assert apply_result({"ok": False}) == "failed"


def test_render() -> None:
    m = _samples(render(_metrics()))
    assert m['hosttune_workload_info{class="training"}'] == "1"
    assert [m[f'hosttune_workload_class{{class="{c}"}}'] for c in ("idle", "training",
                                                                  "unknown")] == ["0", "1", "0"]
    assert m['hosttune_mode{mode="auto"}'] == "1" and m['hosttune_mode{mode="observe"}'] == "0"
    assert m['hosttune_applies_total{result="applied"}'] == "4"
    assert m['hosttune_applies_total{result="refused"}'] == "1"
    assert m['hosttune_applies_total{result="failed"}'] == "0"
    assert m['hosttune_reverts_total{by="admin"}'] == "0"
    # roles: only the fixed names, every one of them, whatever was counted
    roles = {k: v for k, v in m.items() if k.startswith("hosttune_processes")}
    assert roles == {'hosttune_processes{role="training"}': "0",
                     'hosttune_processes{role="unassigned"}': "3"}
    assert "hosttune_drifted_knobs" not in m  # unknown, not 0
    buckets = [int(v) for k, v in m.items() if k.startswith("hosttune_sample_lateness_seconds_b")]
    assert buckets == [2, 2, 3, 3, 3, 3, 3, 3, 3, 4, 4, 5]
    assert m['hosttune_sample_lateness_seconds_bucket{le="0.005"}'] == "2"
    assert m['hosttune_sample_lateness_seconds_bucket{le="+Inf"}'] == "5"
    assert float(m["hosttune_sample_lateness_seconds_sum"]) == 23.025
    assert int(m["process_resident_memory_bytes"]) > 1 << 20
    assert _samples(render(_metrics(drift=2)))["hosttune_drifted_knobs"] == "2"


def test_label_values_are_escaped() -> None:
    text = render(_metrics(workload='a"b\\c\nd', version="x"))
    assert 'hosttune_workload_info{class="a\\"b\\\\c\\nd"} 1' in text.splitlines()
