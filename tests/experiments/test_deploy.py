"""Deployment experiment on a tiny-ImageNet-format fixture with a small random timm ViT, on SLURM."""
from __future__ import annotations

import json

import numpy as np
import pytest

from jobs.data.formats import read_val_annotations, read_wnids
from jobs.deployment.benchmark import measure
from jobs.stages.deploy import QuantizeParams, choose_method
from tests.support.cli import cli, job_ids_from_table, sets, status_json
from tests.support.cluster import wait_for_jobs
from tests.support.datasets import write_tiny_imagenet
from tests.support.results import efficiency, read_csv

CONFIG = "configs/deploy.yaml"
STAGES = ["download", "preprocess", "head", "quantize", "export_onnx", "tensorrt", "benchmark", "report"]


def overrides_for(root) -> list[str]:
    """A 4-block random ViT at 56 px (timm's DINOv2 architecture, no weights: no download here)
    stands in for DINOv2 ViT-S/14. Its CLS token barely varies between images without
    pretraining, so the test pools the patch tokens."""
    out = [f"paths.{k}={root / k}" for k in ("results", "logs", "data", "cache")]
    out += ["resources.cpus_per_task=2", "resources.mem=3G", "stages.download.models=[]",
            "stages.head.model.name=vit_small_patch14_dinov2", "stages.head.model.pretrained=none",
            "stages.head.model.kwargs={depth: 4, img_size: 56, global_pool: avg}", "stages.head.resolution=56",
            "stages.head.resources.gpus=0", "stages.tensorrt.resources.gpus=0", "stages.head.epochs=30",
            "stages.head.batch_size=16", "stages.quantize.threads=1", "stages.benchmark.threads=2",
            "stages.quantize.batch_size=2", "stages.benchmark.batch_size=2",  # torchao's int8 is slow on CPU
            "stages.quantize.val_limit=0", "stages.benchmark.val_limit=0"]
    for stage in ("download", "report"):
        out += [f"stages.{stage}.resources.cpus_per_task=1", f"stages.{stage}.resources.mem=2G"]
    # quantize and export_onnx both need only head: one CPU each, they run side by side on the 2-CPU node
    return out + ["stages.quantize.resources.cpus_per_task=1", "stages.export_onnx.resources.cpus_per_task=1"]


@pytest.fixture(scope="module")
def deploy_run(slurm, tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    for k in ("results", "logs", "data", "cache"):
        (root / k).mkdir()
    fixture = write_tiny_imagenet(root / "data" / "tinyimagenet")      # <paths.data>/<dataset>
    overrides = overrides_for(root)
    ids = job_ids_from_table(cli("submit", "all", "-c", CONFIG, "--executor", "slurm", *sets(overrides)).stdout)
    assert list(ids) == STAGES[1:]                        # download ran here, on the submit host
    wait_for_jobs(list(ids.values()), timeout=400)
    cli("report", "-c", CONFIG, *sets(overrides))
    return {"root": root, "fixture": fixture, "overrides": overrides, "results": root / "results" / "deploy"}


def test_fixture_readers(tmp_path):
    fixture = write_tiny_imagenet(tmp_path)
    wnids, words = read_wnids(fixture["root"])
    assert wnids == fixture["wnids"] and words["n01443537"].startswith("goldfish")
    assert read_val_annotations(fixture["root"]) == fixture["val_labels"]


def test_dag_states_and_tensorrt_skipped_with_reason(deploy_run):
    states = status_json(CONFIG, deploy_run["overrides"])
    assert [states[s]["state"] for s in STAGES] == ["done"] * 5 + ["skipped", "done", "done"]
    acct = json.loads((deploy_run["results"] / "tensorrt" / "accounting.json").read_text())
    assert acct["status"] == "skipped" and "no CUDA device" in acct["skip_reason"]
    assert not (deploy_run["results"] / "tensorrt" / "model.plan").exists()


def test_val_labels_follow_val_annotations_and_greyscale_is_rgb(deploy_run):
    fixture = deploy_run["fixture"]
    with np.load(deploy_run["results"] / "preprocess" / "split.npz") as split:
        expected = [fixture["wnids"].index(fixture["val_labels"][name]) for name in sorted(fixture["val_labels"])]
        assert split["y_val"].tolist() == expected
        assert split["x_train"].shape == (30, 64, 64, 3) and list(split["classes"])[0] == "goldfish"
        grey = split["x_train"][0]                        # the greyscale JPEG: three equal channels
        assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])


def test_onnx_parity_and_int8_agreement(deploy_run):
    onnx_metrics = json.loads((deploy_run["results"] / "export_onnx" / "metrics.json").read_text())
    assert onnx_metrics["max_abs_diff"] <= 1e-4 and onnx_metrics["max_abs_diff_batch1"] <= 1e-4
    assert onnx_metrics["top1_agreement"] == 1.0
    quant = json.loads((deploy_run["results"] / "quantize" / "metrics.json").read_text())
    assert quant["method"] in ("torch_ao", "torchao") and quant["agreement_with_fp32"] >= 0.9
    for info in quant["methods"].values():
        assert info["available"] and info["size_mb"] < 0.5 * quant["fp32_size_mb"]


def test_benchmark_table_and_efficiency_rows(deploy_run):
    rows = {r["variant"]: r for r in read_csv(deploy_run["results"] / "benchmark" / "benchmark.csv")}
    assert list(rows) == ["fp32_eager", "int8_torch_ao", "int8_torchao", "onnxruntime", "tensorrt_fp16"]
    assert rows["tensorrt_fp16"]["status"] == "skipped" and rows["tensorrt_fp16"]["latency_b1_p50_ms"] == ""
    for name in ("fp32_eager", "int8_torch_ao", "int8_torchao", "onnxruntime"):
        r = rows[name]
        assert float(r["latency_b1_p90_ms"]) >= float(r["latency_b1_p50_ms"]) > 0
        assert float(r["throughput_per_s"]) > 0 and float(r["size_mb"]) > 0
        assert float(r["agreement_with_fp32"]) >= 0.9 and float(r["val_top1"]) >= 0.9
    assert float(rows["fp32_eager"]["speedup_p50_vs_fp32"]) == 1.0
    report = (deploy_run["root"] / "results" / "report.md").read_text()
    assert "| tensorrt_fp16 | skipped |" in report and "official test split has no labels" in report
    eff = efficiency(deploy_run["root"] / "results", "deploy")
    assert eff["tensorrt"]["status"] == "skipped" and "no CUDA device" in eff["tensorrt"]["skip_reason"]
    assert {f"benchmark:{v}" for v in rows} <= set(eff)
    assert eff["benchmark:int8_torch_ao"]["precision"] == "int8"
    assert eff["head"]["sacct_state"] == "COMPLETED"


def test_choose_method_prefers_faster_that_keeps_agreement():
    results = {"torch_ao": {"available": True, "agreement_with_fp32": 0.95, "latency_batch_s": 0.2},
               "torchao": {"available": True, "agreement_with_fp32": 0.80, "latency_batch_s": 0.1}}
    assert choose_method(QuantizeParams(min_agreement=0.9), results) == "torch_ao"
    assert choose_method(QuantizeParams(min_agreement=0.5), results) == "torchao"
    assert choose_method(QuantizeParams(method="torchao"), results) == "torchao"


def test_measure_reports_percentiles_and_throughput():
    calls = []
    out = measure(lambda x: calls.append(len(x)), [0], [0] * 8, warmup=2, iterations=20)
    assert calls.count(1) == 22 and calls.count(8) == 22
    assert out["latency_b1_p90_ms"] >= out["latency_b1_p50_ms"] >= 0 and out["throughput_per_s"] > 0
