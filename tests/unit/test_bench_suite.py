"""The ``make bench`` suite's report: medians over runs, the targets table, the rendered
section and how it is written into docs/BENCHMARKS.md (pure: synthetic results, no server)."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.bench import suite
from switchboard.bench.suite import BEGIN, CASES, END, bench_command, median_report, render

#: Per-case figures that meet every target comfortably: (ops/s, server CPU µs/op, p50, p99 ms).
GOOD: dict[str, tuple[float, float, float, float]] = {
    "time-1": (12_000.0, 20.0, 0.080, 0.150),
    "time-1-busy": (20_000.0, 18.0, 0.045, 0.090),
    "time-50": (250_000.0, 0.9, 4.000, 6.000),
    "send-2": (150_000.0, 2.0, 0.300, 0.900),
    "send-50": (120_000.0, 0.95, 10.000, 30.000),
    "send-50-v1": (100_000.0, 2.5, 12.000, 36.000),
    "broadcast-50": (90_000.0, 4.0, 1.000, 3.000),
    "list-1000": (500.0, 900.0, 2.000, 4.000),
}


def fake_run(
    ops_per_sec: float = 1000.0,
    cpu_us: float | None = 2.0,
    p50: float = 0.1,
    p99: float = 0.5,
    *,
    lost: int = 0,
    errors: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One ``switchboard bench --json`` report, with the keys median_report reads."""
    return {
        "ops_per_sec": ops_per_sec,
        "server_cpu_us_per_op": cpu_us,
        "latency_ms": {"p50": p50, "p90": p50 * 1.5, "p99": p99, "p999": p99 * 2, "max": p99 * 4},
        "lost": lost,
        "errors": errors or {},
    }


def make_res() -> dict[str, Any]:
    """The results dict as suite.main builds it: three runs per case around the GOOD figures,
    the null server for the cases that run it too, idle memory."""
    res: dict[str, Any] = {
        "machine": {
            "cpu": "Test CPU @ 3.0GHz", "nproc": "2", "python": "CPython 3.12.0",
            "uvloop": "0.21.0", "os": "Linux 6.1 x86_64", "commit": "abc1234",
            "load_before": "0.10 0.20 0.30",
        },
        "pinning": "server on CPU 0, load on CPU 1 (taskset)",
        "runs": 3,
        "duration": 5.0,
        "warmup": 1.0,
        "server_command": ["taskset", "-c", "0", "switchboard", "serve", "--port", "P",
                           *suite.SERVER_FLAGS],
        "null_command": ["taskset", "-c", "0", "python", "-m", "switchboard.bench.null_server",
                         "--port", "P"],
    }  # fmt: skip
    for kind, slower in (("switchboard", 1.0), ("null", 0.5)):
        res[kind] = {}
        for case in CASES:
            if kind == "null" and not case.null_too:
                continue
            ops, cpu, p50, p99 = GOOD[case.key]
            runs = [
                fake_run(ops * f, cpu * slower * f, p50 * f, p99 * f) for f in (0.98, 1.0, 1.02)
            ]
            res[kind][case.key] = median_report(runs)
    res["idle"] = {"switchboard": 1.5, "null": 0.9}
    res["c_floor"] = {"sleeping": 70.0, "spinning": 40.0}
    return res


def rows(res: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    table = suite.targets(res)
    by_target = {target: (measured, met) for target, measured, met in table}
    assert len(by_target) == len(table), "two targets share a name"
    return by_target


# --- median_report ----------------------------------------------------------------------------


def test_median_report_takes_medians_and_the_worst_lost_and_errors() -> None:
    runs = [
        fake_run(1000.0, 3.0, 0.30, 0.9, lost=0, errors={"RATE_LIMITED": 2}),
        fake_run(3000.0, 1.0, 0.10, 0.5, lost=4, errors={}),
        fake_run(2000.0, 2.0, 0.20, 0.7, lost=1, errors={"RATE_LIMITED": 5, "BUSY": 1}),
    ]
    med = median_report(runs)
    assert med["ops_per_sec"] == 2000.0
    assert med["cpu_us"] == 2.0
    assert med["p50"] == 0.20
    assert med["p90"] == pytest.approx(0.30)
    assert med["p99"] == 0.7
    assert med["p999"] == pytest.approx(1.4)
    assert med["max"] == pytest.approx(2.8)
    assert med["lost"] == 4  # the worst run's, never a median that hides it
    assert med["errors"] == {"RATE_LIMITED": 5, "BUSY": 1}
    assert med["runs"] is runs


def test_median_report_of_an_even_count_averages_the_middle_two() -> None:
    med = median_report([fake_run(p50=0.1), fake_run(p50=0.4), fake_run(p50=0.2),
                         fake_run(p50=0.3)])  # fmt: skip
    assert med["p50"] == pytest.approx(0.25)


def test_median_report_skips_missing_cpu_figures() -> None:
    # No --server-pid figure in a run (e.g. no operation measured): the others' median.
    assert median_report([fake_run(cpu_us=None), fake_run(cpu_us=4.0)])["cpu_us"] == 4.0
    assert median_report([fake_run(cpu_us=None), fake_run(cpu_us=None)])["cpu_us"] is None


@given(
    st.lists(
        st.tuples(
            st.floats(0.001, 1e7, allow_nan=False),
            st.floats(0.001, 1e3, allow_nan=False) | st.none(),
            st.floats(0.001, 1e3, allow_nan=False),
            st.integers(0, 10**6),
            st.dictionaries(st.sampled_from(["RATE_LIMITED", "BUSY", "TOO_LONG"]),
                            st.integers(1, 10**6), max_size=3),
        ),
        min_size=1,
        max_size=7,
    )
)  # fmt: skip
def test_median_report_matches_statistics(
    specs: list[tuple[float, float | None, float, int, dict[str, int]]],
) -> None:
    runs = [fake_run(ops, cpu, p50, p50 * 2, lost=lost, errors=err)
            for ops, cpu, p50, lost, err in specs]  # fmt: skip
    med = median_report(runs)
    assert med["ops_per_sec"] == statistics.median(r["ops_per_sec"] for r in runs)
    assert med["p50"] == statistics.median(r["latency_ms"]["p50"] for r in runs)
    cpus = [c for _, c, _, _, _ in specs if c is not None]
    assert med["cpu_us"] == (statistics.median(cpus) if cpus else None)
    assert med["lost"] == max(lost for _, _, _, lost, _ in specs)
    for name in {n for *_, err in specs for n in err}:
        assert med["errors"][name] == max(err.get(name, 0) for *_, err in specs)
    assert set(med["errors"]) == {n for *_, err in specs for n in err}


# --- targets ----------------------------------------------------------------------------------

TIME1_SLEEPING = "time 1xW1: p50 <= 1.3x the C ping-pong floor (load sleeping)"
TIME1_BUSY = "time 1xW1: p50 <= 1.3x the C ping-pong floor (busy-polling load)"
TIME50_P99 = "time 50xW32: p99 <= 3x the mean Little's law allows"
SEND50_P99 = "send ring 50xW32: p99 <= 3x the mean Little's law allows"
IDLE = "10,000 idle connections: <= 1.6 KiB RSS each"


def test_every_target_is_listed_once_and_met_by_good_figures() -> None:
    table = rows(make_res())
    assert list(table) == [
        "time 50xW32: server CPU <= 1 µs/request",
        "time 50xW32: >= 200,000 requests/s (where the generator allows)",
        TIME50_P99,
        "send ring 50xW32: server CPU <= 1 µs/message",
        "send ring 50xW32: >= 100,000 messages/s (where the generator allows)",
        SEND50_P99,
        "send ring 50xW32: 0 lost",
        TIME1_SLEEPING,
        TIME1_BUSY,
        "list, 1,000 connected: p50 < 5 ms",
        IDLE,
    ]
    assert all(met for _, met in table.values()), table
    # Each time-1 row reads its own case and its own floor.
    assert table[TIME1_SLEEPING][0] == "80 µs (floor 70 µs)"
    assert table[TIME1_BUSY][0] == "45 µs (floor 40 µs)"
    # 1,600 requests in flight at 250,000/s: a mean of 6.4 ms.
    assert table[TIME50_P99][0] == "6.000 ms (mean 6.400 ms)"


def test_little_mean_is_in_flight_over_throughput() -> None:
    ring = next(c for c in CASES if c.key == "send-50")
    assert suite.little_mean_ms(ring, 160_000.0) == pytest.approx(10.0)
    assert suite.little_mean_ms(ring, 0.0) == float("inf")


def test_without_a_c_floor_the_round_trip_targets_are_missed_and_say_why() -> None:
    res = make_res()
    del res["c_floor"]
    table = rows(res)
    assert table[TIME1_SLEEPING] == ("80 µs (no C floor measured)", False)
    assert table[TIME1_BUSY] == ("45 µs (no C floor measured)", False)


#: (case key, figure, value, the target it decides, met, measured as shown).
THRESHOLDS: list[tuple[str, str, Any, str, bool, str]] = [
    ("time-1", "p50", 0.091, TIME1_SLEEPING, True, "91 µs (floor 70 µs)"),
    ("time-1", "p50", 0.0911, TIME1_SLEEPING, False, "91 µs (floor 70 µs)"),
    ("time-1-busy", "p50", 0.052, TIME1_BUSY, True, "52 µs (floor 40 µs)"),
    ("time-1-busy", "p50", 0.0521, TIME1_BUSY, False, "52 µs (floor 40 µs)"),
    ("time-50", "cpu_us", 1.0, "time 50xW32: server CPU <= 1 µs/request", True, "1.00 µs"),
    ("time-50", "cpu_us", 1.01, "time 50xW32: server CPU <= 1 µs/request", False, "1.01 µs"),
    ("time-50", "cpu_us", None, "time 50xW32: server CPU <= 1 µs/request", False, "- µs"),
    ("time-50", "ops_per_sec", 200_000.0,
     "time 50xW32: >= 200,000 requests/s (where the generator allows)", True, "200,000/s"),
    ("time-50", "ops_per_sec", 199_000.0,
     "time 50xW32: >= 200,000 requests/s (where the generator allows)", False, "199,000/s"),
    ("time-50", "p99", 19.2, TIME50_P99, True, "19.200 ms (mean 6.400 ms)"),
    ("time-50", "p99", 19.21, TIME50_P99, False, "19.210 ms (mean 6.400 ms)"),
    ("send-50", "cpu_us", 1.0, "send ring 50xW32: server CPU <= 1 µs/message", True, "1.00 µs"),
    ("send-50", "cpu_us", 1.01, "send ring 50xW32: server CPU <= 1 µs/message", False,
     "1.01 µs"),
    ("send-50", "ops_per_sec", 100_000.0,
     "send ring 50xW32: >= 100,000 messages/s (where the generator allows)", True, "100,000/s"),
    ("send-50", "ops_per_sec", 99_000.0,
     "send ring 50xW32: >= 100,000 messages/s (where the generator allows)", False, "99,000/s"),
    ("send-50", "p99", 40.0, SEND50_P99, True, "40.000 ms (mean 13.333 ms)"),
    ("send-50", "p99", 40.01, SEND50_P99, False, "40.010 ms (mean 13.333 ms)"),
    ("send-50", "lost", 0, "send ring 50xW32: 0 lost", True, "0"),
    ("send-50", "lost", 1, "send ring 50xW32: 0 lost", False, "1"),
    ("list-1000", "p50", 4.999, "list, 1,000 connected: p50 < 5 ms", True, "4.999 ms"),
    ("list-1000", "p50", 5.0, "list, 1,000 connected: p50 < 5 ms", False, "5.000 ms"),
    ("idle", "switchboard", 1.6, IDLE, True, "1.60 KiB"),
    ("idle", "switchboard", 1.61, IDLE, False, "1.61 KiB"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("key", "figure", "value", "target", "met", "measured"),
    THRESHOLDS,
    ids=[f"{k}-{f}-{v}" for k, f, v, *_ in THRESHOLDS],
)
def test_each_target_at_and_around_its_threshold(
    key: str, figure: str, value: Any, target: str, met: bool, measured: str
) -> None:
    res = make_res()
    if key == "idle":
        res["idle"][figure] = value
    else:
        res["switchboard"][key][figure] = value
    table = rows(res)
    assert table[target] == (measured, met)
    # Only the target that figure decides changes.
    others = {t: m for t, (_, m) in table.items() if t != target}
    assert all(others.values()), others


def test_the_null_server_figures_decide_no_target() -> None:
    res = make_res()
    before = suite.targets(res)
    for r in res["null"].values():
        r.update(p50=50.0, p99=50.0, cpu_us=99.0, ops_per_sec=1.0, lost=7)
    assert suite.targets(res) == before


# --- bench_command and render -----------------------------------------------------------------


def test_bench_command_is_the_cli_invocation() -> None:
    busy = next(c for c in CASES if c.key == "time-1-busy")
    assert bench_command(busy, 4321, 99, 2.5, 0.5) == [
        sys.executable, "-m", "switchboard", "bench", "--port", "4321", "--mode", "time",
        "--clients", "1", "--window", "1", "--duration", "2.5", "--warmup", "0.5",
        "--server-pid", "99", "--json", "--busy-poll",
    ]  # fmt: skip
    sleeping = next(c for c in CASES if c.key == "time-1")
    assert "--busy-poll" not in bench_command(sleeping, 1, 1, 5.0, 1.0)
    assert bench_command(sleeping, 1, 1, 5.0, 1.0)[-1] == "--json"
    # send cases state the protocol version their load negotiates
    ring, ring_v1 = (next(c for c in CASES if c.key == k) for k in ("send-50", "send-50-v1"))
    assert bench_command(ring, 1, 1, 5.0, 1.0)[-2:] == ["--protocol", "2"]
    assert bench_command(ring_v1, 1, 1, 5.0, 1.0)[-2:] == ["--protocol", "1"]


def test_only_the_busy_case_busy_polls() -> None:
    assert [c.key for c in CASES if c.busy_poll] == ["time-1-busy"]
    assert len({c.key for c in CASES}) == len(CASES)


def test_render_is_the_section_between_the_markers() -> None:
    text = render(make_res(), chart=False)
    lines = text.splitlines()
    assert lines[0] == BEGIN and lines[-1] == END
    assert text.count(suite.BEGIN_PREFIX) == 1 and text.count(END) == 1
    assert "(3 runs per case, medians; 5 s measured after 1 s of warm-up)" in text
    assert "| CPU | Test CPU @ 3.0GHz |" in text
    assert "| code | commit `abc1234` |" in text
    assert "| pinning | server on CPU 0, load on CPU 1 (taskset) |" in text
    assert "| load average before the run | 0.10 0.20 0.30 |" in text
    assert "![" not in text
    assert "![throughput and p99 against clients](bench.png)" in render(make_res(), chart=True)


def test_render_names_every_command() -> None:
    res = make_res()
    lines = render(res, chart=False).splitlines()
    block = lines[lines.index("### The commands") + 2 :]
    block = block[1 : block.index("```", 1)]
    assert block[0] == " ".join(res["server_command"])
    assert block[1] == " ".join(res["null_command"])
    commands = [line for line in block if line.startswith("switchboard bench ")]
    assert len(commands) == len(CASES)
    for case, line in zip(CASES, commands, strict=True):
        assert line == " ".join(["switchboard", *bench_command(case, "P", "PID", 5.0, 1.0)[3:]])
        assert f"--mode {case.mode} --clients {case.clients} --window {case.window} " in line
        assert "--port P " in line and "--server-pid PID " in line
        assert "--duration 5 --warmup 1 " in line
        assert line.endswith("--busy-poll") == case.busy_poll
        assert ("--busy-poll" in line) == case.busy_poll
    assert block[-1].startswith("# idle memory: 10,000 connections")


def test_render_has_a_row_per_case_and_server() -> None:
    res = make_res()
    text = render(res, chart=False)
    for case in CASES:
        assert f"| {case.label} | switchboard | " in text
        assert (f"| {case.label} | null | " in text) == case.null_too
        r = res["switchboard"][case.key]
        assert (
            f"| {case.label} | switchboard | {r['ops_per_sec']:,.0f} | {r['cpu_us']:.2f} "
            f"| {r['p50']:.3f} | {r['p90']:.3f} | {r['p99']:.3f} | {r['p999']:.3f} "
            f"| {r['max']:.3f} | 0 | none |"
        ) in text
        # The comparison with the null server, where there is one.
        assert (f"* {case.label}: " in text) == case.null_too
    assert "**Switchboard 1.50 KiB**, null server 0.90 KiB" in text


def test_render_shows_errors_lost_and_missed_targets() -> None:
    res = make_res()
    res["switchboard"]["send-50"] = median_report(
        [fake_run(120_000.0, 0.95, 2.0, 6.0, lost=3, errors={"BUSY": 2})] * 3
    )
    res["switchboard"]["time-1"]["p50"] = 0.134
    text = render(res, chart=False)
    assert "| 3 | BUSY 2 |" in text
    assert f"| {TIME1_SLEEPING} | 134 µs (floor 70 µs) | **no** |" in text
    assert f"| {TIME1_BUSY} | 45 µs (floor 40 µs) | yes |" in text
    assert "| send ring 50xW32: 0 lost | 3 | **no** |" in text
    targets_part = text[text.index("### Targets") :]
    assert targets_part.count("| yes |") == len(suite.targets(res)) - 2


def test_render_leaves_out_cases_not_run() -> None:
    res = make_res()
    del res["null"]["time-1-busy"]
    text = render(res, chart=False)
    assert "| time, 1 client, W=1, busy-polling load | null |" not in text
    assert "* time, 1 client, W=1, busy-polling load:" not in text
    assert "| time, 1 client, W=1, busy-polling load | switchboard |" in text


# --- write_doc --------------------------------------------------------------------------------

SECTION = f"{BEGIN}\n\nnew figures\n\n{END}"


def test_write_doc_replaces_only_the_generated_section(tmp_path: Path) -> None:
    doc = tmp_path / "BENCHMARKS.md"
    head = "# Benchmarks\n\nHand-written intro.\n\n## Server\n\n"
    tail = "\n\n## Notes\n\nHand-written notes, kept.\n"
    doc.write_text(f"{head}{BEGIN}\n\nold figures\nold table\n\n{END}{tail}", encoding="utf-8")
    suite.write_doc(doc, SECTION)
    assert doc.read_text(encoding="utf-8") == head + SECTION + tail


def test_write_doc_knows_the_begin_marker_by_its_prefix(tmp_path: Path) -> None:
    # An older suite wrote another parenthesis after the marker's name.
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(f"intro\n{suite.BEGIN_PREFIX} (old words) -->\nold\n{END}\nafter\n", "utf-8")
    suite.write_doc(doc, SECTION)
    assert doc.read_text(encoding="utf-8") == f"intro\n{SECTION}\nafter\n"


def test_write_doc_appends_a_section_to_a_file_without_markers(tmp_path: Path) -> None:
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\nThe codec's figures.\n\n\n", encoding="utf-8")
    suite.write_doc(doc, SECTION)
    expected = f"# Benchmarks\n\nThe codec's figures.\n\n## Server\n\n{SECTION}\n"
    assert doc.read_text(encoding="utf-8") == expected
    # Written again, the section is replaced, not appended a second time.
    suite.write_doc(doc, SECTION.replace("new figures", "newer figures"))
    assert doc.read_text(encoding="utf-8") == expected.replace("new figures", "newer figures")


def test_write_doc_creates_a_missing_file(tmp_path: Path) -> None:
    doc = tmp_path / "BENCHMARKS.md"
    suite.write_doc(doc, SECTION)
    assert doc.read_text(encoding="utf-8") == f"# Benchmarks\n\n## Server\n\n{SECTION}\n"


def test_write_doc_with_a_rendered_section(tmp_path: Path) -> None:
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(f"# Benchmarks\n\n{BEGIN}\nold\n{END}\n\n## Afterword\n", encoding="utf-8")
    section = render(make_res(), chart=True)
    suite.write_doc(doc, section)
    text = doc.read_text(encoding="utf-8")
    assert text == f"# Benchmarks\n\n{section}\n\n## Afterword\n"
    assert "\nold\n" not in text


def test_render_compares_with_the_null_server_either_way() -> None:
    res = make_res()  # the null server at half Switchboard's CPU
    res["null"]["time-50"]["cpu_us"] = res["switchboard"]["time-50"]["cpu_us"] * 2
    text = render(res, chart=False)
    send = next(line for line in text.splitlines() if line.startswith("* send, 50-client"))
    assert "2.00x the null server" in send and "µs of protocol work per operation" in send
    time50 = next(line for line in text.splitlines() if line.startswith("* time, 50 clients"))
    assert "0.50x the null server" in time50 and "within the runs' noise" in time50
    assert "-" not in time50.split("x the null server")[1]  # no negative protocol work


# --- the hostile-client case: output amplification -------------------------------------------


def fake_amplification(
    growth_kib: int | None = 2048, p99: float = 10.0, *, complete: bool = True
) -> dict[str, Any]:
    """One ``python -m switchboard.bench.hostile --json`` report."""
    return {
        "case": "amplification", "joins": 20_000, "history": 50, "text_bytes": 4096,
        "sent_bytes": 340_014, "received_bytes": 4_147_000_000, "answers": 20_000,
        "history_messages": 1_000_000, "errors": {}, "seconds": 12.5, "complete": complete,
        "rss_kib": {"baseline": 30_000, "peak": None if growth_kib is None else 30_000 + growth_kib,
                    "after": 30_100, "peak_growth": growth_kib},
        "bystander": {"requests": 1200,
                      "latency_ms": {"p50": p99 / 4, "p90": p99 / 2, "p99": p99, "max": p99 * 2}},
    }  # fmt: skip


AMP_RSS = "amplification: peak server RSS growth < 64 MiB"
AMP_P99 = "amplification: bystander p99 < 50 ms, every JOIN answered"


def test_amplification_report_takes_medians_and_the_worst_errors() -> None:
    runs = [fake_amplification(1024, 30.0), fake_amplification(4096, 10.0),
            fake_amplification(2048, 20.0)]  # fmt: skip
    runs[2]["errors"] = {"RATE_LIMITED": 3}
    amp = suite.amplification_report(runs)
    assert (amp["rss_growth_kib"], amp["p99"], amp["p50"], amp["max"]) == (2048, 20.0, 5.0, 40.0)
    assert amp["errors"] == {"RATE_LIMITED": 3} and amp["complete"] is True
    assert amp["runs"] == runs and amp["joins"] == 20_000
    runs[1]["complete"] = False
    assert suite.amplification_report(runs)["complete"] is False
    # RSS not measured (no --server-pid) in some runs: the median of those that measured it.
    runs[0]["rss_kib"]["peak_growth"] = None
    assert suite.amplification_report(runs)["rss_growth_kib"] == 3072


@pytest.mark.parametrize(
    ("growth", "p99", "complete", "expected"),
    [
        (2048, 10.0, True, {AMP_RSS: ("2.0 MiB", True), AMP_P99: ("10.000 ms", True)}),
        (64 * 1024 - 1, 49.999, True, {AMP_RSS: ("64.0 MiB", True), AMP_P99: ("49.999 ms", True)}),
        (64 * 1024, 50.0, True, {AMP_RSS: ("64.0 MiB", False), AMP_P99: ("50.000 ms", False)}),
        (None, 10.0, False, {AMP_RSS: ("-", False), AMP_P99: ("10.000 ms, incomplete", False)}),
    ],
)
def test_the_amplification_targets(
    growth: int | None, p99: float, complete: bool, expected: dict[str, tuple[str, bool]]
) -> None:
    res = make_res()
    assert AMP_RSS not in rows(res)  # not run: no row
    res["amplification"] = suite.amplification_report(
        [fake_amplification(growth, p99, complete=complete)]
    )
    table = rows(res)
    assert {t: table[t] for t in expected} == expected
    assert all(met for t, (_, met) in table.items() if t not in expected)


def test_render_shows_the_amplification_case_when_it_ran() -> None:
    res = make_res()
    assert "amplification" not in render(res, chart=False).split("```")[-1]
    res["amplification"] = suite.amplification_report([fake_amplification(3 * 1024, 12.5)])
    text = render(res, chart=False)
    assert "python -m switchboard.bench.hostile --port P --server-pid PID --joins 20000 --json" in (
        text
    )
    assert "switchboard serve --port P --log-level warning" in text
    line = next(x for x in text.splitlines() if x.startswith("Output amplification"))
    assert "20,000 JOINs (340,014 bytes)" in line and "4.15 GB" in line
    assert "**+3.0 MiB**" in line and "**p99 12.500 ms**" in line and "incomplete" not in line
    assert f"| {AMP_RSS} | 3.0 MiB | yes |" in text


def test_amplification_command_is_the_module_invocation() -> None:
    assert suite.amplification_command(4321, 99, 500) == [
        sys.executable, "-m", "switchboard.bench.hostile", "--port", "4321",
        "--server-pid", "99", "--joins", "500", "--json",
    ]  # fmt: skip


# --- durable history (issue 17) -------------------------------------------------------------

DURABLE = "broadcast 50xW1, durable history: >= 80% of the memory-only server's throughput"


def with_memory(res: dict[str, Any], memory_ops: float) -> dict[str, Any]:
    res["memory"] = {"broadcast-50": median_report([fake_run(memory_ops)] * 3)}
    res["memory_command"] = ["switchboard", "serve", "--port", "P", *suite.MEMORY_FLAGS]
    return res


@pytest.mark.parametrize(
    ("memory_ops", "met", "measured"),
    [
        (90_000.0 / 0.8, True, "90,000/s = 80% of 112,500/s"),
        (90_000.0 / 0.79, False, "90,000/s = 79% of 113,924/s"),
        (60_000.0, True, "90,000/s = 150% of 60,000/s"),
    ],
)
def test_durable_broadcast_is_judged_against_the_memory_only_server(
    memory_ops: float, met: bool, measured: str
) -> None:
    table = rows(with_memory(make_res(), memory_ops))
    assert table[DURABLE] == (measured, met)
    assert DURABLE not in rows(make_res())  # no memory-only run: no such target


def test_render_shows_the_memory_only_server_and_the_history_figures() -> None:
    res = with_memory(make_res(), 100_000.0)
    res["history"] = {
        "lines": 1_000_000, "rooms": 10, "db_bytes": 145_000_000, "bytes_per_line": 145.0,
        "mib_per_million_lines": 138.3, "fill_lines_per_sec": 23_000.0, "requests": 200,
        "page": 1000, "p50_ms": 9.5, "p99_ms": 30.25, "max_ms": 41.0,
    }  # fmt: skip
    text = render(res, chart=False)
    assert "| broadcast, 50 members, W=1 | switchboard, memory-only | 100,000 |" in text
    assert " ".join(res["memory_command"]) in text
    assert "**138 MiB per million lines**" in text
    assert "**p50 9.50 ms**, p99 30.25 ms" in text
    assert "python -m switchboard.bench.history --lines 1000000 --requests 200" in text


def test_only_the_broadcast_case_runs_memory_only_too() -> None:
    assert [c.key for c in CASES if c.memory_too] == ["broadcast-50"]
    assert suite.MEMORY_FLAGS[-2:] == ("--data-dir", "none")
