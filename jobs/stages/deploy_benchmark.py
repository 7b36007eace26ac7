"""Stage kind `deploy_benchmark`: every deployment variant measured side by side in one run.

fp32 eager, int8 (torch.ao and torchao), ONNX Runtime, TensorRT (its own stage's CUDA-event
numbers, or `skipped` with the reason): latency p50/p90 at batch 1 and throughput at batch N with
a fixed thread count and warm-up, size on disk, val top-1 and agreement with fp32.
"""
from __future__ import annotations

from dataclasses import dataclass, field


from pipeline.contract import StageContext, register
from safeio import atomic_write_json, atomic_write_text
from safeio.markdown import cell, markdown_table

from jobs.data.files import load_split
from jobs.deployment.benchmark import measure
from jobs.deployment.quantize import predict, quantize_model, state_dict_bytes, val_inputs

COLUMNS = ("variant", "status", "latency_b1_p50_ms", "latency_b1_p90_ms", "throughput_per_s", "size_mb",
           "val_top1", "agreement_with_fp32", "speedup_p50_vs_fp32", "speedup_throughput_vs_fp32", "note")


@dataclass
class BenchParams:
    head_stage: str = "head"
    quantize_stage: str = "quantize"
    export_stage: str = "export_onnx"
    tensorrt_stage: str = "tensorrt"
    data_stage: str = "preprocess"
    threads: int = field(default=2, metadata={"min": 1})
    batch_size: int = field(default=8, metadata={"min": 1})
    warmup: int = field(default=3, metadata={"min": 0})
    iterations: int = field(default=20, metadata={"min": 20, "help": "timed iterations per measurement"})
    val_limit: int = field(default=0, metadata={"min": 0, "help": "0 = every val image"})


@register("deploy_benchmark", BenchParams)
def run(p: BenchParams, ctx: StageContext) -> dict:
    import torch

    from jobs.deployment.runtimes import ONNX_FILE, ort_session
    from jobs.training.trained import load_trained
    torch.set_num_threads(p.threads)
    model, transform, _, _ = load_trained(ctx.load_upstream, p.head_stage, ctx.log)
    x, y = val_inputs(load_split(ctx.load_upstream, p.data_stage), transform, p.val_limit)
    xn = x[:p.batch_size] if len(x) >= p.batch_size else x.repeat(p.batch_size, 1, 1, 1)[:p.batch_size]
    x1 = xn[:1]
    variants = {"fp32_eager": (model, state_dict_bytes(model))}
    methods = ctx.upstream_metrics(p.quantize_stage)["methods"]
    for method, info in methods.items():
        if info.get("available"):
            variants[f"int8_{method}"] = (quantize_model(model, method), info["size_mb"] * 2**20)
    onnx_path = ctx.need(p.export_stage) / ONNX_FILE
    session = ort_session(onnx_path, p.threads)

    def onnxruntime(batch):
        return torch.from_numpy(session.run(None, {"pixels": batch.numpy()})[0])
    variants["onnxruntime"] = (onnxruntime, onnx_path.stat().st_size)
    rows, ref = [], None
    with torch.no_grad():
        for done, (name, (fn, size_bytes)) in enumerate(variants.items()):
            ctx.progress(done, len(variants), unit="variant")
            pred = predict(fn, x).argmax(1)
            ref = pred if ref is None else ref
            row = {"variant": name, "status": "done", **measure(fn, x1, xn, p.warmup, p.iterations),
                   "size_mb": size_bytes / 2**20, "val_top1": float((pred == y).float().mean()),
                   "agreement_with_fp32": float((pred == ref).float().mean()), "note": ""}
            rows.append(row)
            ctx.log.info("%-16s p50 %.2f ms  p90 %.2f ms  %.1f img/s at batch %d  %.1f MB  top-1 %.3f  agree %.3f",
                         name, row["latency_b1_p50_ms"], row["latency_b1_p90_ms"], row["throughput_per_s"],
                         p.batch_size, row["size_mb"], row["val_top1"], row["agreement_with_fp32"])
    ctx.progress(len(variants), len(variants), unit="variant")
    rows.append(_tensorrt_row(ctx, p))
    base = rows[0]
    for r in rows:
        if r["status"] == "done":
            r["speedup_p50_vs_fp32"] = base["latency_b1_p50_ms"] / r["latency_b1_p50_ms"]
            r["speedup_throughput_vs_fp32"] = r["throughput_per_s"] / base["throughput_per_s"]
    _write(ctx, p, rows)
    return {"variants": rows, "threads": p.threads, "batch_size": p.batch_size, "iterations": p.iterations,
            "val_acc": base["val_top1"]}


def _tensorrt_row(ctx: StageContext, p: BenchParams) -> dict:
    acct = ctx.upstream_accounting(p.tensorrt_stage)
    if acct.get("status") == "skipped":
        return {"variant": "tensorrt_fp16", "status": "skipped", "note": acct.get("skip_reason")}
    m = ctx.upstream_metrics(p.tensorrt_stage)
    return {"variant": "tensorrt_fp16", "status": "done", "latency_b1_p50_ms": m["latency_b1_p50_ms"],
            "latency_b1_p90_ms": m["latency_b1_p90_ms"], "throughput_per_s": m["throughput_per_s"],
            "size_mb": m["size_mb"], "agreement_with_fp32": m["top1_agreement_vs_ort"],
            "note": f"GPU, CUDA events; max |diff| vs ONNX Runtime {m['max_abs_diff_vs_ort']:.2e}"}


def _write(ctx: StageContext, p: BenchParams, rows: list[dict]) -> None:
    lines = [",".join(COLUMNS)] + [",".join(cell(r.get(c)).replace(",", ";") for c in COLUMNS) for r in rows]
    atomic_write_text(ctx.out_dir / "benchmark.csv", "\n".join(lines) + "\n")
    atomic_write_text(ctx.report_path, (
        f"### {ctx.stage}: deployment variants\n\n{p.threads} CPU threads, batch 1 latency over {p.iterations} "
        f"timed calls after {p.warmup} warm-up, throughput at batch {p.batch_size}. Accuracy is on tiny-ImageNet "
        "**val** (the official test split has no labels).\n\n" + markdown_table(rows, COLUMNS) + "\n"))
    # One efficiency.csv row per variant: the engine reads ctx.extra_rows_path beside the accounting.
    extra = [{"experiment": ctx.experiment, "stage": f"{ctx.stage}:{r['variant']}", "kind": "deploy_variant",
              "status": r["status"], "skip_reason": r["note"] if r["status"] == "skipped" else None,
              "throughput_per_s": r.get("throughput_per_s"), "val_acc": r.get("val_top1"),
              "precision": "int8" if r["variant"].startswith("int8") else "fp16" if "fp16" in r["variant"] else "fp32",
              "device": "cuda" if r["variant"].startswith("tensorrt") else "cpu", "cpus": p.threads,
              "seed": ctx.seed, "config_hash": ctx.fingerprint} for r in rows]
    atomic_write_json(ctx.extra_rows_path, extra)
