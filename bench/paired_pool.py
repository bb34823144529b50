#!/usr/bin/env python3
"""Pools the paired reps of several runs of bench/grammar_relay.sh (its raw TSV files, e.g.
the copies bench/console.sh keeps as bench/out/console-raw-*.tsv): per rep, after - before of
their ratios to the run's median direct time; the pooled median and mean, a 95 % bootstrap
interval over reps and one over blocks of 10 consecutive reps (reps next to each other share
the machine's drift, so the block interval is the honest one).

    python3 bench/paired_pool.py bench/out/console-raw-*.tsv
"""
import statistics, random, sys
def diffs(f):
    rows=[l.split('\t') for l in open(f) if l.strip()]
    d=[float(r[3]) for r in rows if r[1]=='direct']; md=statistics.median(d)
    sides={}
    for r in rows:
        if r[1] in('before','after'): sides.setdefault(int(r[5]),{})[r[1]]=float(r[3])
    return [md/s['after']-md/s['before'] for k,s in sorted(sides.items()) if len(s)==2]
files=sys.argv[1:]
allv=[]; blocks=[]
for f in files:
    v=diffs(f); allv+=v
    blocks += [v[i:i+10] for i in range(0,len(v),10)]
rng=random.Random(20261207)
b1=sorted(statistics.median(rng.choices(allv,k=len(allv))) for _ in range(10000))
# block bootstrap: resample 10-rep blocks
b2=[]
for _ in range(10000):
    s=[x for bl in rng.choices(blocks,k=len(blocks)) for x in bl]
    b2.append(statistics.median(s))
b2.sort()
print(f"reps {len(allv)} median {statistics.median(allv):+.4f} mean {statistics.mean(allv):+.4f}; rep bootstrap 95% {b1[249]:+.4f}..{b1[9749]:+.4f}; block bootstrap 95% {b2[249]:+.4f}..{b2[9749]:+.4f}")
