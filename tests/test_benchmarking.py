"""The FPS measurement (actrack_fast.benchmarking), its pytest suite, the JSON->markdown table script and
``actrack-fast bench``: on CPU with the tiny config and a few calls per case."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from actrack_fast import backend, benchmarking
from actrack_fast.cli import main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import fps_table  # noqa: E402  (scripts in benchmarks/, not package modules)
import ncu_stall_summary  # noqa: E402

TABLE_ROW = re.compile(r"^\| (?P<component>[^|]+) \| (?P<backend>[\w-]+) \| (?P<batch>\d+) \| (?P<dtype>\w+) \| "
                       r"(?P<median>[\d.]+) \((?P<p10>[\d.]+)-(?P<p90>[\d.]+)\) \| (?P<fps>[\d,.]+) \| "
                       r"(?P<tfps>[\d,.]+) \|")


def table_rows(text: str) -> list[dict]:
    rows = [match.groupdict() for match in map(TABLE_ROW.match, text.splitlines()) if match]
    for row in rows:
        for field in ("median", "p10", "p90", "fps", "tfps"):
            row[field] = float(row[field].replace(",", ""))
    return rows


def check_positive(rows: list[dict]) -> None:
    assert rows
    for row in rows:
        values = [row[f] for f in ("median", "p10", "p90", "fps", "tfps")]
        assert all(math.isfinite(v) and v > 0 for v in values), row
        assert row["p10"] <= row["median"] <= row["p90"]
        # The table rounds: frames/s is 1000 / median ms, target-frames/s that times the targets.
        assert row["fps"] == pytest.approx(1e3 / row["median"], rel=0.01, abs=0.1)
        assert row["tfps"] == pytest.approx(int(row["batch"]) * row["fps"], rel=0.01, abs=0.1)


@pytest.fixture(scope="module", autouse=True)
def _release_models():
    yield
    benchmarking.release()


def test_bench_cli_prints_a_table(capsys, one_thread):
    main(["bench", "--device", "cpu", "--config", "tiny", "--component", "correlation,encoder,step",
          "--batch", "1,2", "--frames", "3", "--warmup", "1"])
    out = capsys.readouterr().out
    rows = table_rows(out)
    check_positive(rows)
    measured = {(r["component"], r["backend"], int(r["batch"])) for r in rows}
    fast_on_cpu = backend.select("xcorr", "cpu") != backend.REFERENCE
    expected_backends = {"reference-eager-fp32"} | ({"fast"} if fast_on_cpu else set())
    assert measured == {(c, b, n) for c in ("correlation", "encoder", "full step") for b in expected_backends
                        for n in (1, 2)}
    assert "CPU" in out and f"torch {torch.__version__}" in out and "config tiny" in out


def test_bench_cli_bad_arguments(capsys):
    for argv, message in ((["--backend", "turbo"], "--backend"), (["--component", "nose"], "--component"),
                          (["--batch", "0"], "--batch"), (["--batch", "two"], "--batch"),
                          (["--config", "B999"], "--config")):
        with pytest.raises(SystemExit) as exit_info:
            main(["bench", "--device", "cpu", *argv])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--device", "cpu", "--backend", "reference-bf16-graph", "--component", "encoder"])
    assert exit_info.value.code == 1 and "needs a CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs,message", [
    (dict(component="nose"), "unknown component"),
    (dict(backend_name="turbo"), "unknown backend"),
    (dict(config="B999"), "unknown config name"),
    (dict(batch=0), "batch"), (dict(batch=-3), "batch"), (dict(batch=1.5), "batch"), (dict(batch=True), "batch"),
    (dict(backend_name="reference-bf16-graph"), "needs a CUDA device"),
    (dict(backend_name="compile"), "needs a CUDA device"),
    (dict(backend_name="reference-eager-fp32", dtype="bfloat16"), "contradicts"),
    (dict(dtype="float64"), "dtype"),
    (dict(compile_mode="fastest"), "compile_mode"),
    (dict(device="tpu"), "device"),
])
def test_prepare_rejects_bad_arguments(kwargs, message):
    arguments = dict(component="encoder", backend_name="reference-eager-fp32", config="tiny", device="cpu")
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        benchmarking.prepare(**arguments)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_device_without_cuda():
    with pytest.raises(ValueError, match="CUDA is not available"):
        benchmarking.prepare("encoder", "reference-eager-fp32", "tiny", device="cuda")


def test_measure_rejects_bad_run_counts():
    for kwargs in (dict(runs=0), dict(runs=2.5), dict(warmup=-1)):
        with pytest.raises(ValueError, match="runs|warmup"):
            benchmarking.measure("correlation", "reference-eager-fp32", "tiny", device="cpu", **kwargs)


def test_unavailable_backends_are_skipped_with_a_reason(monkeypatch):
    # Without any fast path (no extension, no Triton on the device), "fast" would be the reference: skipped.
    monkeypatch.setattr(backend, "select", lambda op, device, requested=None: backend.REFERENCE)
    with pytest.raises(benchmarking.Unavailable, match="actrack_fast._C"):
        benchmarking.prepare("step", "fast", "tiny", device="cpu")


def test_rows_hold_what_the_table_needs(one_thread):
    row = benchmarking.measure("decoder", "reference-eager-fp32", "tiny", batch=3, device="cpu", runs=4, warmup=1)
    assert row["component"] == "decoder" and row["batch"] == 3 and row["runs"] == 4 and row["dtype"] == "float32"
    assert row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]
    assert row["target_frames_per_s"] == pytest.approx(3 * row["frames_per_s"])
    assert row["frames_per_s"] == pytest.approx(1e3 / row["median_ms"])
    assert row["torch"] == torch.__version__ and row["device"].startswith("CPU")
    json.dumps(row)  # stored as pytest-benchmark extra_info


def _row(backend_name: str, median_ms: float, component: str = "step", batch: int = 1, device: str = "GPU") -> dict:
    return {"component": component, "backend": backend_name, "config": "B256", "batch": batch, "dtype": "bfloat16",
            "median_ms": median_ms, "p10_ms": median_ms * 0.9, "p90_ms": median_ms * 1.1,
            "frames_per_s": 1e3 / median_ms, "target_frames_per_s": batch * 1e3 / median_ms, "runs": 500,
            "timing": "CUDA events", "graph": True, "ops": "xcorr=cuda", "compile_mode": None, "inputs": "frames",
            "device": device, "torch": "2", "cuda": "13", "triton": "3", "matmul_tf32": False, "date": "today"}


def test_speedups_against_the_reference_and_the_best_pytorch_path():
    rows = [_row("reference-eager-fp32", 12.0), _row("reference-bf16-graph", 3.0), _row("compile", 2.0),
            _row("fast", 0.8), _row("fast", 1.5, batch=64), _row("reference-bf16-graph", 6.0, batch=64)]
    ratios = benchmarking.speedups(rows)
    fast = ratios[("B256", "step", 1, "fast")]
    assert fast["vs_reference"] == pytest.approx(15.0)
    assert fast["vs_best_pytorch"] == pytest.approx(2.5) and fast["best_pytorch"] == "compile"
    assert ratios[("B256", "step", 1, "compile")] == {"vs_reference": pytest.approx(6.0)}
    # At 64 targets no reference row was measured: only the ratio to the best PyTorch path measured.
    assert ratios[("B256", "step", 64, "fast")] == {"vs_best_pytorch": pytest.approx(4.0),
                                                    "best_pytorch": "reference-bf16-graph"}
    table = benchmarking.markdown_table(rows)
    assert "| 15.00x | 2.50x (compile) |" in table and "| 4.00x (reference-bf16-graph) |" in table


def test_table_refuses_mixed_devices_and_no_rows():
    with pytest.raises(ValueError, match="several devices"):
        benchmarking.markdown_table([_row("fast", 1.0), _row("compile", 2.0, device="other GPU")])
    with pytest.raises(ValueError, match="no measured rows"):
        benchmarking.markdown_table([])


def test_suite_json_to_table_and_readme_block(tmp_path, capsys):
    """Run the pytest suite (two components) to a pytest-benchmark JSON, tabulate it, rewrite a README copy."""
    results = tmp_path / "fps.json"
    # Not an xdist worker: pytest-benchmark turns itself off (and writes no JSON) when it sees xdist active or
    # the worker variables that a test running under ``pytest -n`` would pass on.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    env.update(ACTRACK_FPS_COMPONENTS="correlation,decoder", ACTRACK_FPS_BATCHES="1,2",
               ACTRACK_FPS_ROWS=str(tmp_path / "rows.jsonl"), CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                          "benchmarks/test_fps.py", f"--benchmark-json={results}"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    benchmarks = json.loads(results.read_text())["benchmarks"]
    assert {b["group"] for b in benchmarks} == {"correlation", "decoder"}
    assert len(fps_table.load_rows(tmp_path / "rows.jsonl")) == len(benchmarks)

    readme = tmp_path / "README.md"
    original = (ROOT / "README.md").read_text()
    readme.write_text(original)
    assert fps_table.main([str(results), "--readme", str(readme), "--output", str(tmp_path / "table.md")]) == 0
    printed = capsys.readouterr().out
    rows = table_rows(printed)
    check_positive(rows)
    assert len(rows) == len(benchmarks)
    assert (tmp_path / "table.md").read_text() == printed
    rewritten = readme.read_text()
    before, _, rest = original.partition(fps_table.START)
    after = rest.partition(fps_table.END)[2]
    assert rewritten == before + fps_table.START + "\n" + printed + fps_table.END + after
    # Rewriting again replaces the block rather than adding a second one.
    assert fps_table.main([str(results), "--readme", str(readme)]) == 0
    assert readme.read_text() == rewritten


def test_fps_table_errors(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps(_row("fast", 1.0)) + "\n")
    assert fps_table.main([str(rows), "--readme", str(readme)]) == 1
    assert "markers" in capsys.readouterr().err and readme.read_text() == "# no markers\n"
    not_benchmark = tmp_path / "other.json"
    not_benchmark.write_text("{}")
    assert fps_table.main([str(not_benchmark)]) == 1
    assert "not a pytest-benchmark JSON" in capsys.readouterr().err


@pytest.mark.cuda
@pytest.mark.parametrize("backend_name", ["reference-eager-fp32", "reference-bf16-graph", "fast"])
def test_every_component_on_cuda(backend_name):
    rows = []
    for component in benchmarking.COMPONENTS:
        try:
            rows.append(benchmarking.measure(component, backend_name, "tiny", batch=2, device="cuda", runs=5, warmup=2))
        except benchmarking.Unavailable:
            assert component == "crop" or backend_name == "fast"
    assert any(row["component"] == "step" for row in rows)
    for row in rows:
        assert row["graph"] == (backend_name != "reference-eager-fp32")
        assert math.isfinite(row["median_ms"]) and row["median_ms"] > 0


def test_ncu_stall_summary_ranks_instructions_per_kernel():
    """The Nsight Compute source-page summary splits the CSV per kernel instance and ranks by stall samples."""
    header = ('"Address","Source","Warp Stall Sampling (All Samples)","stall_long_sb","stall_long_sb (Not Issued)",'
              '"L2 Theoretical Sectors Global Excessive"')
    text = "\n".join([
        '"Kernel Name","_decode_kernel",', header,
        '"0x10","LDG.E R1, [R2]","3","0","0","96"', '"0x20","FMUL R3, R1, R4","40","38","30","0"',
        '"Kernel Name","_decode_kernel",', header,
        '"0x10","LDG.E.128 R4, [R2]","1","0","0","0"', '"0x20","FADD R3, R1, R4","9","9","9","0"',
    ])
    tables = ncu_stall_summary.kernel_tables(text)
    assert len(tables) == 2
    first = ncu_stall_summary.summarise(tables[0], top=5)
    assert first[0] == "2 instructions, 43 stall samples"
    ranked = [line for line in first if "%" in line]
    assert "FMUL" in ranked[0] and "long_sb 38" in ranked[0] and "93.0%" in ranked[0]
    assert any("L2 Theoretical Sectors Global Excessive" in line for line in first)
    assert not any("Excessive" in line for line in ncu_stall_summary.summarise(tables[1], top=5))
    assert ncu_stall_summary.listing(tables[1])[1].split()[1] == "9"
