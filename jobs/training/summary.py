"""The written summary of one training run (a `train` stage's section of report.md), from what
the run measured and logged, in the order a reader checks a run: environment and reproducibility,
model, surgery, head, inputs, curves, result."""
from __future__ import annotations

from safeio.markdown import markdown_table

PRETRAINED_REASONS = {
    "none": "random init; no pretrained weights asked for, and none can be downloaded offline",
    "imagenet": "ImageNet weights from the local cache (TORCH_HOME / HF cache, staged by the download stage; "
                "offline)",
}
# What a seeded run here still does not pin down (seed_everything sets the rest).
NONDETERMINISM = ("ops without a deterministic kernel only warn (the log lists them); results depend on the "
                  "thread count and on the hardware (float sums in another order); on CUDA, AMP and "
                  "atomics-based kernels add run-to-run differences")


def pretrained_reason(pretrained: str) -> str:
    return PRETRAINED_REASONS.get(pretrained, "weights from a state_dict file")


def train_summary(stage: str, seed: int, p, run_state: dict, facts: dict, grid: bool) -> str:
    """The section of stage `stage`; `grid`: it links augmented_grid.png (the run wrote one)."""
    history = run_state["history"]
    sections = [f"### {stage}: training\n", _environment(seed, facts), _model(p, facts), _surgery(facts),
                "Inputs:\n\n" + "\n".join(f"- {line}" for line in facts["transforms"]) + "\n"]
    if grid:
        sections.append("![augmented training images](augmented_grid.png)\n")
    sections += ["![curves](curves.png)\n", _epochs(history),
                 f"Best val accuracy **{100 * run_state['best_acc']:.2f}%** at epoch {run_state['best_epoch']} of "
                 f"{len(history)}; training time {sum(h['seconds'] for h in history):.1f} s "
                 f"({facts['mode'].replace('_', ' ')}).\n"]
    return "\n".join(sections)


def _environment(seed: int, facts: dict) -> str:
    return (f"Environment: {facts['environment']}. Seed {seed}; {facts['determinism']}. Not pinned down by "
            f"the seed: {NONDETERMINISM}.\n")


def _model(p, facts: dict) -> str:
    built = facts.get("model", {})
    old, new = built.get("old_head"), built.get("new_head")
    head = (f"; head `{built['head']}` in_features={old[0]}, out_features={old[1]} -> in_features={new[0]} "
            f"out_features={new[1]} ({len(facts['classes'])} classes)" if old and new else "")
    return (f"Model `{p.model.name}` ({built.get('source', p.model.source)}), pretrained: {p.model.pretrained} "
            f"({pretrained_reason(p.model.pretrained)}){head}; trainable parameters {facts['trainable']:,} of "
            f"{facts['total']:,}.\n")


def _surgery(facts: dict) -> str:
    lines = []
    for s in facts["summaries"]:
        if s["op"] == "replace_activation":
            lines.append(f"- replace_activation: {s['before']} {s['type']} modules before (depth first); replaced "
                         f"indices (1-based) {s['replaced_indices']}; {s['type']} remaining: {s['remaining']}; "
                         f"{s['with']} inserted: {s['inserted']} (asserted)")
        else:
            lines.append(f"- {s['op']}: " + ", ".join(f"{k} {v}" for k, v in s.items() if k != "op"))
    return "Surgery, in order:\n\n" + ("\n".join(lines) if lines else "- none") + "\n"


def _epochs(history: list[dict]) -> str:
    rows = [[h["epoch"], f"{h['train_loss']:.4f}", f"{100 * h['train_acc']:.2f}%", f"{h['val_loss']:.4f}",
             f"{100 * h['val_acc']:.2f}%", f"{100 * (h['train_acc'] - h['val_acc']):+.1f}"] for h in history]
    return markdown_table(rows, ["epoch", "train loss", "train acc", "val loss", "val acc",
                                 "train - val (points)"]) + "\n"
