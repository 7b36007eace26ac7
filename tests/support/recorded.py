"""Scheduler output recorded on the local cluster, read by the parser and report tests."""

# Recorded on the local cluster (slurm 22.05) with
# `sacct --duplicates --parsable2 -o JobID,JobName,State,Elapsed,TotalCPU,MaxRSS,AllocCPUS,NodeList,Partition,NTasks`.
# Job 10 was requeued (`scontrol requeue`) after its first step: each attempt is a job line and its steps.
REQUEUED = """10|sx.req|REQUEUED|00:00:06|00:06.096||1|vm|debug|
10.batch|batch|CANCELLED|00:00:06|00:00.016|12136K|1|vm||1
10.0|python3|COMPLETED|00:00:06|00:06.079|95320K|1|vm||1
10|sx.req|COMPLETED|00:00:04|00:04.063||1|vm|debug|
10.batch|batch|COMPLETED|00:00:04|00:00.011||1|vm||1
10.0|python3|COMPLETED|00:00:04|00:04.052||1|vm||1
"""
# Job 9: step 0 ran two tasks (~50 MB and ~150 MB), step 1 one task too short to be sampled.
MULTI_TASK = """9|sx.multi|COMPLETED|00:00:10|00:13.159||2|vm|debug|
9.batch|batch|COMPLETED|00:00:10|00:00.021|12476K|2|vm||1
9.0|python3|COMPLETED|00:00:07|00:10.059|166872K|2|vm||2
9.1|python3|COMPLETED|00:00:03|00:03.079||2|vm||1
"""
# Job 18 while its second step ran, then after it ended.
RUNNING = """18|sx.run|RUNNING|00:00:15|00:07.795||1|vm|debug|
18.batch|batch|RUNNING|00:00:15|00:00:00||1|vm||1
18.0|sx.first|COMPLETED|00:00:08|00:07.795|74900K|1|vm||1
18.1|sx.second|RUNNING|00:00:07|00:00:00||1|vm||1
"""
ENDED = """18|sx.run|COMPLETED|00:00:28|00:27.782||1|vm|debug|
18.batch|batch|COMPLETED|00:00:28|00:00.021|12144K|1|vm||1
18.0|sx.first|COMPLETED|00:00:08|00:07.795|74900K|1|vm||1
18.1|sx.second|COMPLETED|00:00:20|00:19.965|13400K|1|vm||1
"""
# One allocation (job `sxa`), a step per stage named `<experiment>.<stage>`; requeued while step
# `sxa.two` ran; in the second attempt the step numbers restart and `sxa.two` is step 0.
ALLOCATION_REQUEUED = """23|sxa|REQUEUED|00:00:14|00:09.085||1|vm|debug|
23.batch|batch|CANCELLED|00:00:14|00:00.019|14076K|1|vm||1
23.0|sxa.one|COMPLETED|00:00:06|00:05.063|77848K|1|vm||1
23.1|sxa.two|CANCELLED|00:00:07|00:04.002|108756K|1|vm||1
23|sxa|COMPLETED|00:00:08|00:05.551||1|vm|debug|
23.batch|batch|COMPLETED|00:00:08|00:00.012|11.50M|1|vm||1
23.0|sxa.two|COMPLETED|00:00:08|00:05.538|139300K|1|vm||1
"""

# The same cluster with what each job asked for and when it queued and ran (issue 21), from
# `sacct --duplicates --parsable2 -o <SACCT_FIELDS>` (pipeline/executors/slurm/sacct.py).
# Job 1229 (3G, 2 h limit) was requeued: each attempt's Start - Eligible is its queue wait.
ASKED_REQUEUED = """1229|emnist.linear_probe|REQUEUED|00:00:07|00:09.955||2|vm|debug||3G|02:00:00|2026-12-07T13:08:44|2026-12-07T13:08:54|2026-12-07T13:08:54|2026-12-07T13:09:01||
1229.batch|batch|CANCELLED|00:00:07|00:00.005|12276K|2|vm||1|||2026-12-07T13:08:54|2026-12-07T13:08:54|2026-12-07T13:08:54|2026-12-07T13:09:01|0|cpu=00:00:00,energy=0,fs/disk=34674,mem=12276K,pages=0,vmem=221500K
1229.0|python|FAILED|00:00:08|00:09.950|800288K|2|vm||1|||2026-12-07T13:08:54|2026-12-07T13:08:54|2026-12-07T13:08:54|2026-12-07T13:09:02|0|cpu=00:00:05,energy=0,fs/disk=155153061,mem=800288K,pages=6,vmem=3790264K
1229|emnist.linear_probe|COMPLETED|00:00:12|00:15.447||2|vm|debug||3G|02:00:00|2026-12-07T13:09:03|2026-12-07T13:09:03|2026-12-07T13:09:04|2026-12-07T13:09:16|0|
1229.batch|batch|COMPLETED|00:00:12|00:00.019|12104K|2|vm||1|||2026-12-07T13:09:04|2026-12-07T13:09:04|2026-12-07T13:09:04|2026-12-07T13:09:16|0|cpu=00:00:00,energy=0,fs/disk=34674,mem=12104K,pages=0,vmem=221500K
1229.0|python|COMPLETED|00:00:12|00:15.428|834840K|2|vm||1|||2026-12-07T13:09:04|2026-12-07T13:09:04|2026-12-07T13:09:04|2026-12-07T13:09:16|0|cpu=00:00:13,energy=0,fs/disk=214050883,mem=834840K,pages=0,vmem=3860680K
"""
# Array 1349 (3 tasks, 1 CPU and 2G each): tasks 0 and 1 took the node's 2 CPUs, task 2 queued 5 s.
ASKED_ARRAY = """1349_0|quickstart.train|COMPLETED|00:00:05|00:05.316||1|vm|debug||2G|00:10:00|2026-12-07T13:22:58|2026-12-07T13:23:05|2026-12-07T13:23:05|2026-12-07T13:23:10|0|
1349_0.batch|batch|COMPLETED|00:00:05|00:00.015|12304K|1|vm||1|||2026-12-07T13:23:05|2026-12-07T13:23:05|2026-12-07T13:23:05|2026-12-07T13:23:10|0|cpu=00:00:00,energy=0,fs/disk=36514,mem=12304K,pages=0,vmem=221500K
1349_0.0|python|COMPLETED|00:00:05|00:05.301|1020028K|1|vm||1|||2026-12-07T13:23:05|2026-12-07T13:23:05|2026-12-07T13:23:05|2026-12-07T13:23:10|0|cpu=00:00:04,energy=0,fs/disk=83031857,mem=1020028K,pages=5,vmem=3681468K
1349_1|quickstart.train|COMPLETED|00:00:05|00:05.506||1|vm|debug||2G|00:10:00|2026-12-07T13:22:58|2026-12-07T13:23:05|2026-12-07T13:23:05|2026-12-07T13:23:10|0|
1349_1.batch|batch|COMPLETED|00:00:05|00:00.012|12352K|1|vm||1|||2026-12-07T13:23:05|2026-12-07T13:23:05|2026-12-07T13:23:05|2026-12-07T13:23:10|0|cpu=00:00:00,energy=0,fs/disk=36514,mem=12352K,pages=0,vmem=221500K
1349_1.0|python|COMPLETED|00:00:05|00:05.493|1022564K|1|vm||1|||2026-12-07T13:23:05|2026-12-07T13:23:05|2026-12-07T13:23:05|2026-12-07T13:23:10|0|cpu=00:00:04,energy=0,fs/disk=83044600,mem=1022564K,pages=0,vmem=3684280K
1349_2|quickstart.train|COMPLETED|00:00:06|00:05.229||1|vm|debug||2G|00:10:00|2026-12-07T13:22:58|2026-12-07T13:23:05|2026-12-07T13:23:10|2026-12-07T13:23:16|0|
1349_2.batch|batch|COMPLETED|00:00:06|00:00.011|12668K|1|vm||1|||2026-12-07T13:23:10|2026-12-07T13:23:10|2026-12-07T13:23:10|2026-12-07T13:23:16|0|cpu=00:00:00,energy=0,fs/disk=36514,mem=12668K,pages=0,vmem=221500K
1349_2.0|python|COMPLETED|00:00:06|00:05.217|1020432K|1|vm||1|||2026-12-07T13:23:10|2026-12-07T13:23:10|2026-12-07T13:23:10|2026-12-07T13:23:16|0|cpu=00:00:04,energy=0,fs/disk=84018573,mem=1020432K,pages=5,vmem=3682104K
"""
# One allocation (job `alloc`, 500M, 15 min), a step per stage, requeued while step `alloc.slow` ran.
ASKED_ALLOCATION = """1300|alloc|REQUEUED|00:00:01|00:01.568||2|vm|debug||500M|00:15:00|2026-12-07T13:19:11|2026-12-07T13:19:11|2026-12-07T13:19:12|2026-12-07T13:19:13|0|
1300.batch|batch|CANCELLED|00:00:01|00:00.525||2|vm||1|||2026-12-07T13:19:12|2026-12-07T13:19:12|2026-12-07T13:19:12|2026-12-07T13:19:13|0|energy=0
1300.0|alloc.first|COMPLETED|00:00:01|00:00.580||1|vm||1|||2026-12-07T13:19:12|2026-12-07T13:19:12|2026-12-07T13:19:12|2026-12-07T13:19:13|0|energy=0
1300.1|alloc.slow|FAILED|00:00:00|00:00.462||2|vm||1|||2026-12-07T13:19:13|2026-12-07T13:19:13|2026-12-07T13:19:13|2026-12-07T13:19:13|0|energy=0
1300|alloc|FAILED|00:00:01|00:01.282||2|vm|debug||500M|00:15:00|2026-12-07T13:19:14|2026-12-07T13:19:16|2026-12-07T13:19:16|2026-12-07T13:19:17|0|
1300.batch|batch|FAILED|00:00:01|00:00.429||2|vm||1|||2026-12-07T13:19:16|2026-12-07T13:19:16|2026-12-07T13:19:16|2026-12-07T13:19:17|0|energy=0
1300.0|alloc.slow|COMPLETED|00:00:01|00:00.436||2|vm||1|||2026-12-07T13:19:16|2026-12-07T13:19:16|2026-12-07T13:19:16|2026-12-07T13:19:17|0|energy=0
1300.1|alloc.last|FAILED|00:00:00|00:00.416||1|vm||1|||2026-12-07T13:19:17|2026-12-07T13:19:17|2026-12-07T13:19:17|2026-12-07T13:19:17|0|energy=0
"""
# Job 2538 queued 13 s behind other jobs; 2539 waited 25 s on `afterok:2538` (Eligible is when the
# dependency was met), then started at once: no queue wait. First while 2538 ran, then at the end.
ASKED_RUNNING = """2538|rec.run|RUNNING|00:00:05|00:00:00||1|vm|debug||100M|00:02:00|2026-12-07T15:58:26|2026-12-07T15:58:26|2026-12-07T15:58:39|Unknown||
2538.batch|batch|RUNNING|00:00:05|00:00:00||1|vm||1|||2026-12-07T15:58:39|2026-12-07T15:58:39|2026-12-07T15:58:39|Unknown|0|
2539|rec.after|PENDING|00:00:00|00:00:00||1|None assigned|debug||100M|00:02:00|2026-12-07T15:58:26|Unknown|Unknown|Unknown|0|
"""
ASKED_DEPENDENCY = """2538|rec.run|COMPLETED|00:00:12|00:00.002||1|vm|debug||100M|00:02:00|2026-12-07T15:58:26|2026-12-07T15:58:26|2026-12-07T15:58:39|2026-12-07T15:58:51||
2538.batch|batch|COMPLETED|00:00:12|00:00.002|3184K|1|vm||1|||2026-12-07T15:58:39|2026-12-07T15:58:39|2026-12-07T15:58:39|2026-12-07T15:58:51|0|cpu=00:00:00,energy=0,fs/disk=11085,mem=3184K,pages=0,vmem=5512K
2539|rec.after|COMPLETED|00:00:01|00:00.002||1|vm|debug||100M|00:02:00|2026-12-07T15:58:26|2026-12-07T15:58:51|2026-12-07T15:58:51|2026-12-07T15:58:52||
2539.batch|batch|COMPLETED|00:00:01|00:00.002||1|vm||1|||2026-12-07T15:58:51|2026-12-07T15:58:51|2026-12-07T15:58:51|2026-12-07T15:58:52|0|energy=0
"""
# Job 3893 asked 200M and its stage's command allocated 600 MB, on the cluster with memory enforced
# (task/cgroup, ConstrainRAMSpace): the kernel killed it in step 0, which sacct records as
# OUT_OF_MEMORY, while the job (its batch script saw srun fail) ends FAILED.
ASKED_OOM = """3893|oom.big|FAILED|00:00:00|00:00.529||1|vm|debug||200M|00:05:00|2026-12-07T18:55:48|2026-12-07T18:55:48|2026-12-07T18:55:49|2026-12-07T18:55:49|0|
3893.batch|batch|FAILED|00:00:00|00:00.013||1|vm||1|||2026-12-07T18:55:49|2026-12-07T18:55:49|2026-12-07T18:55:49|2026-12-07T18:55:49|0|energy=0
3893.0|python|OUT_OF_MEMORY|00:00:00|00:00.516||1|vm||1|||2026-12-07T18:55:49|2026-12-07T18:55:49|2026-12-07T18:55:49|2026-12-07T18:55:49|0|energy=0
"""
