"""status's reading of the queue: a stage stuck behind a failed one (never starts) against one
about to start."""
from __future__ import annotations

from pipeline.executors.slurm.sacct import parse_squeue


def test_stuck_only_when_every_waiting_job_waits_on_a_live_one_or_never_starts():
    from pipeline.cli.status import stuck_or_done
    from pipeline.executors import LiveJob
    never = LiveJob("pending", "DependencyNeverSatisfied", on_dependency=True, never_starts=True)
    behind_never = LiveJob("pending", "Dependency", on_dependency=True, waits_on=("1",))
    # its upstream ended a moment ago; the scheduler has not yet started it or marked it never
    undecided = LiveJob("pending", "Dependency", on_dependency=True, waits_on=("99",))
    assert stuck_or_done({}) and stuck_or_done({"1": never, "2": behind_never})
    assert not stuck_or_done({"1": never, "2": behind_never, "3": undecided})
    assert not stuck_or_done({"1": never, "4": LiveJob("running", "RUNNING")})
    assert not stuck_or_done({"2": behind_never})


def test_a_dependency_on_an_array_is_one_on_its_live_tasks(monkeypatch):
    from pipeline.cli.status import stuck_or_done
    from pipeline.executors.slurm import executor
    text = ("622_1|q.evaluate|PENDING|DependencyNeverSatisfied|aftercorr:621_*(failed)\n"
            "623|q.report|PENDING|Dependency|afterany:622_*(unfulfilled)\n")
    monkeypatch.setattr(executor, "query_squeue", lambda ids: {j: v for j, v in parse_squeue(text).items() if j in ids})
    live = executor.SlurmExecutor().live(["622_0", "622_1", "622_2", "623"])
    assert live["623"].waits_on == ("622_1",) and live["622_1"].never_starts
    assert stuck_or_done(live)     # the report waits only on the task that never starts
