"""benchmarks/gpu.py runs where CI can run it: skipped cleanly without CUDA, every part on the CPU."""

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpu():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", ROOT / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the real thing")
def test_quick_without_cuda_says_skipped_and_exits_0(gpu, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gpu.main(["--quick"]) == 0
    assert "no CUDA device, skipped" in capsys.readouterr().out
    assert not (tmp_path / "gpu.json").exists()


def test_leakage_part_on_cpu(gpu):
    s = replace(gpu.SMOKE, leak_backends=("sdpa", "flex"), leak_dtypes=("float32",))
    out = gpu.leakage(s)
    assert set(out) == {f"{kind}/{b}/float32" for b in ("sdpa", "flex")
                        for kind in ("kernel", *(f"model-{v}" for v in gpu.LEAK_VARIANTS))}
    assert all(r.get("ok") for r in out.values()), out
    assert out["model-tl-v1.1-per-batch/sdpa/float32"]["cross_grad_max"] == 0.0
    if "flex" in gpu.available_backends_cpu():
        assert "no backward on CPU" in out["kernel/flex/float32"]["gradients"]


def test_compile_part_counts_no_new_graphs_after_warm_up(gpu):
    out = gpu.compile_counts(replace(gpu.SMOKE, compile_batches=2, compile_variants=("plain", "tl-per-batch")))
    assert out["batches"] == 5
    for name in ("plain", "tl-per-batch"):
        assert out[name]["new_graphs"] == 0 and out[name]["warmup_graphs"] >= 1, out[name]


def test_throughput_and_loader_parts_and_the_json(gpu, tmp_path, monkeypatch, capsys):
    s = replace(gpu.SMOKE, lengths=(64,), steps=1)
    out = gpu.throughput(s)
    assert {k.split("/")[-1] for k in out} >= {"padded-sdpa", "packed-sdpa", "packed-window"}
    packed = out["tiny/L64/packed-sdpa"]
    assert packed["real_tokens_per_step"] == out["tiny/L64/padded-sdpa"]["real_tokens_per_step"]  # same images
    assert packed["vs_padded"] > 0 and 0 < packed["mfu"] < 1
    train = gpu.loader_training(replace(s, train_images=12, train_steps=2), tmp_path / "data")
    assert train["steps"] == 2 and 0 <= train["wait_share"] <= 1
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    assert gpu.main(["--cpu-smoke", "--parts", "none"]) == 0  # the driver alone: JSON and table
    written = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert written["device"] == "cpu" and written["settings"]["device"] == "cpu"
    assert "wrote " in capsys.readouterr().out


def test_a_failing_part_is_recorded_and_the_run_goes_on(gpu):
    def broken(s):
        raise RuntimeError("kernel exploded")

    r = gpu.guarded(broken, gpu.SMOKE)
    assert "RuntimeError: kernel exploded" in r["error"]
