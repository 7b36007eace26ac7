"""The three CIFAR experiments end to end on the real local SLURM cluster, each config submitted as
a user would, over CIFAR-10 fixtures in the release's own pickle format, shrunk by `--set` only
(models, resolution, epochs, steps; no pretrained weights offline), all three DAGs at once:
  configs/cifar10_activation_swap.yaml  swap vs control on cat/dog/airplane
  configs/cifar10_levels.yaml           levels 1-4 (ResNet-50 -> resnet18, ViT-S -> ViT-Ti at 32 px)
  configs/mlp_cnn_practical.yaml        NumPy MLP, PyTorch MLPs, the PreAct VGG, LayerNorm checks
Asserted: job states, logged counts (ReLUs, mapping, class counts), report sections, evaluate's
ensemble and TTA rows, the ConvNet's parameter count against the practical's table."""
from __future__ import annotations

import time

import pytest

from tests.support.cli import cli, job_ids_from_table, sets
from tests.support.cluster import wait_for_jobs
from tests.support.datasets import write_cifar10_three, write_cifar_like
from tests.support.results import efficiency, stage_json

pytestmark = pytest.mark.slurm
SWAP, LEVELS, PRACTICAL = "cifar10_activation_swap", "cifar10_levels", "mlp_cnn_practical"
RESNET_LEVELS = ["level1", "level2_noaug", "level2_aug", "level2", "level3", "level4_resnet50_se"]
LEVEL_MODELS = RESNET_LEVELS + ["level4_efficientnet_b0", "level4_vit_small"]
PRACTICAL_MODELS = ["mlp_default", "mlp_adam", "mlp_deep", "mlp_tuned", "convnet"]
CONVNET_PARAMS = 11_138_122          # tests/experiments/test_mlp_cnn_practical.py derives it from the practical's layer table


def shrink_swap() -> list[str]:
    out = ["stages.download.models=[]"]
    for stage in ("swap", "control"):
        out += [f"stages.{stage}.model.pretrained=none", f"stages.{stage}.epochs=1",
                f"stages.{stage}.resolution=32"]
    return out


def shrink_levels() -> list[str]:
    # download and prepare ask for 2 CPUs in the config: at 1 (like every other job here) they
    # leave the second CPU to the other DAGs' jobs instead of waiting for the whole node
    out = ["stages.download.models=[]", "resources.gpus=0", "stages.download.resources.cpus_per_task=1",
           "stages.prepare.resources.cpus_per_task=1"]
    for stage in LEVEL_MODELS:
        out += [f"stages.{stage}.model.pretrained=none", f"stages.{stage}.resolution=16", f"stages.{stage}.epochs=1",
                f"stages.{stage}.warmup_epochs=0"]
    out += [f"stages.{stage}.model.name=resnet10t" for stage in RESNET_LEVELS]      # timm: layer4 and fc too
    out += ["stages.level4_vit_small.model.name=vit_tiny_patch16_224",
            "stages.level4_vit_small.model.kwargs.img_size=16", "stages.level4_vit_small.model.kwargs.patch_size=4"]
    return out


def shrink_practical() -> list[str]:
    out = ["stages.numpy_mlp.max_steps=60", "stages.numpy_mlp.eval_freq=20", "stages.layernorm.rows=64",
           "stages.layernorm.features=32", "stages.convnet.resources.gpus=0", "stages.convnet.epochs=1",
           "stages.convnet.steps_per_epoch=4", "stages.convnet.batch_size=16"]
    for stage in ("mlp_default", "mlp_adam"):
        out += [f"stages.{stage}.epochs=2", f"stages.{stage}.steps_per_epoch=10"]
    return out + ["stages.mlp_deep.epochs=1", "stages.mlp_tuned.epochs=2"]


@pytest.fixture(scope="module")
def runs(slurm, tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    # The levels DAG first: its chain (level1 -> level2 -> level3 -> level4 -> evaluate) is the
    # longest, and jobs submitted earlier start first: the other DAGs fill the second CPU beside it.
    plans = {LEVELS: shrink_levels(), SWAP: shrink_swap(), PRACTICAL: shrink_practical()}
    out = {}
    for name, shrink in plans.items():
        ws = root / name
        for k in ("results", "logs", "data", "cache"):
            (ws / k).mkdir(parents=True)
        if name == SWAP:
            write_cifar10_three(ws / "data" / "cifar10", per_class_train=30, per_class_test=10)
        elif name == LEVELS:
            write_cifar_like(ws / "data" / "cifar10", n_train=250, n_test=50)
        else:
            write_cifar_like(ws / "data" / "cifar10", n_train=300, n_test=60)
        # One CPU per job: two jobs of the three DAGs run side by side on the 2-CPU node.
        overrides = [f"paths.{k}={ws / k}" for k in ("results", "logs", "data", "cache")] + \
            ["resources.cpus_per_task=1", "resources.mem=3G"] + shrink
        proc = cli("submit", "all", "-c", f"configs/{name}.yaml", "--executor", "slurm", *sets(overrides))
        out[name] = {"root": ws, "overrides": overrides, "ids": job_ids_from_table(proc.stdout),
                     "results": ws / "results" / name}
    start = time.monotonic()
    wait_for_jobs([i for run in out.values() for i in run["ids"].values()], timeout=900)
    print(f"three CIFAR DAGs on SLURM: {time.monotonic() - start:.0f} s after the last submit")
    for name, run in out.items():
        cli("report", "-c", f"configs/{name}.yaml", *sets(run["overrides"]))
    return out


@pytest.mark.parametrize("name", [SWAP, LEVELS, PRACTICAL])
def test_every_stage_completed_on_slurm(runs, name):
    run = runs[name]
    rows = efficiency(run["root"] / "results", name)
    here = {s for s, r in rows.items() if r["ran_on"] == "submit_host"}     # the download, where it is marked so
    assert here == ({"download"} if name != PRACTICAL else set())
    assert sorted(rows) == sorted([*run["ids"], *here])
    assert {s: r["sacct_state"] for s, r in rows.items() if s not in here} == {s: "COMPLETED" for s in run["ids"]}


def test_activation_swap_report_shows_counts_mapping_and_comparison(runs):
    run = runs[SWAP]
    swap = (run["results"] / "swap" / "report.md").read_text()
    assert ("replace_activation: 9 ReLU modules before (depth first); replaced indices (1-based) [7, 8, 9]; "
            "ReLU remaining: 6; SiLU inserted: 3 (asserted)") in swap
    assert "in_features=512, out_features=1000 -> in_features=512 out_features=3 (3 classes)" in swap
    assert (run["results"] / "swap" / "augmented_grid.png").stat().st_size > 1000
    assert stage_json(run["results"], "prepare", "class_map_ids.json") == {"3": 0, "5": 1, "0": 2}
    report = (run["root"] / "results" / "report.md").read_text()
    assert "| 0 | cat | 27 | 3 | 10 |" in report                      # 90/10 of 30 per class; test 10
    order = ["Environment: python", "Seed 0; cudnn.deterministic=True cudnn.benchmark=False", "Surgery, in order",
             "Inputs:", "![augmented training images]", "| epoch | train loss", "Best val accuracy",
             "Against `control` on the same val images", "Next steps, from these numbers"]
    positions = [report.index(s) for s in order]
    assert positions == sorted(positions), order
    assert stage_json(run["results"], "evaluate")["vs_baseline"]["swap"]["n_images"] == 9


def test_levels_dag_scores_every_level_ensembles_and_tta(runs):
    run = runs[LEVELS]
    prepare = stage_json(run["results"], "prepare")
    sizes = [prepare[f"{s}_size"] for s in ("train", "val", "test")]
    assert sum(sizes) == 300 and all(abs(n - m) <= 2 for n, m in zip(sizes, (240, 30, 30))), sizes   # 80/10/10,
    n_test = sizes[2]                                                      # rounded per class
    ev = stage_json(run["results"], "evaluate")
    rows = ev["rows"]
    level4 = ["level4_resnet50_se", "level4_efficientnet_b0", "level4_vit_small"]
    expected = LEVEL_MODELS + [m + "+flip" for m in LEVEL_MODELS] + \
        ["ensemble_soft", "ensemble_soft+flip", "ensemble_val_weighted", "ensemble_val_weighted+flip"]
    assert sorted(rows) == sorted(expected)
    for name in ("ensemble_soft", "ensemble_val_weighted+flip"):
        assert rows[name]["members"] == level4 and rows[name]["n_images"] == n_test
    assert sum(rows["ensemble_val_weighted"]["weights"]) == pytest.approx(1.0, abs=1e-5)
    # Level 1 trains the head alone; level 2 adds layer4; level 3 adds the SE modules everywhere.
    trainable = {s: stage_json(run["results"], s)["trainable_params"] for s in LEVEL_MODELS}
    assert trainable["level1"] == trainable["level2_noaug"] == 512 * 10 + 10
    import timm
    layer4 = sum(q.numel() for q in timm.create_model("resnet10t").layer4.parameters())
    assert trainable["level2"] == layer4 + 512 * 10 + 10
    se_all = sum(2 * c * (c // 16) + c // 16 + c for c in (64, 128, 256, 512))     # one BasicBlock per stage
    assert trainable["level3"] == trainable["level2"] + se_all == trainable["level4_resnet50_se"]
    assert "se: where blocks, reduction 16, count 4" in (run["results"] / "level4_resnet50_se" / "report.md").read_text()
    log = (run["root"] / "logs" / LEVELS / "level4_resnet50_se" / f"{run['ids']['level4_resnet50_se']}_0_log.out")
    assert "init_from level3 after the surgery" in log.read_text()        # level 3's SE weights carried over
    report = (run["root"] / "results" / "report.md").read_text()
    summary = report[report.index("#### Summary"):]
    for label in ("Level 1: ResNet-50 probe", "Level 2: + layer4", "Level 3: + SE blocks",
                  "Level 4: validation-weighted voting, flip TTA"):
        assert label in summary
    assert summary.count("\n| `") == 12 and "CPU-hours" in summary
    assert "#### Per class: `level3` (test split)" in report and "Hardest class: **" in report
    assert report.count("/curves.png)") >= len(LEVEL_MODELS)


def test_practical_dag_compares_every_model_on_the_same_test_images(runs):
    run = runs[PRACTICAL]
    ev = stage_json(run["results"], "evaluate")
    assert sorted(ev["models"]) == sorted(PRACTICAL_MODELS + ["numpy_mlp"])
    # The NumPy MLP's probabilities, scored here, give the accuracy it measured itself.
    assert ev["models"]["numpy_mlp"]["accuracy"] == pytest.approx(stage_json(run["results"], "numpy_mlp")["test_acc"])
    assert stage_json(run["results"], "convnet")["trainable_params"] == CONVNET_PARAMS
    assert stage_json(run["results"], "mlp_default")["trainable_params"] == 3072 * 100 + 100 + 100 * 10 + 10
    acct = stage_json(run["results"], "mlp_default", "accounting.json")
    assert (acct["epochs"], acct["samples_per_epoch"]) == (2, 10 * 200)        # 2 x 10 steps of 200
    layernorm = stage_json(run["results"], "layernorm")
    assert layernorm["gradcheck"] is True and layernorm["max_diff_fp64"] < 1e-10
    report = (run["root"] / "results" / "report.md").read_text()
    assert "### layernorm: LayerNorm, three ways" in report and "| LayerNormManual |" in report
    assert "Preprocessing `mean_image`, init `normal`" in report
    assert "normalize mean_image (pixels 0..255 minus the training mean image" in report
    for stage in PRACTICAL_MODELS + ["numpy_mlp"]:
        assert (run["results"] / stage / "curves.png").stat().st_size > 1000, stage
        assert f"| {stage} |" in (run["results"] / "evaluate" / "report.md").read_text(), stage
