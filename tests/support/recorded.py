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
