#!/bin/bash
# ab2.sh A B rounds reps args... : per round the barrier probe, then A and B (their medians)
# (as ab.sh, each round tagged by barrier_probe: the fast or the SLOW host regime, reported apart)
A=$1; B=$2; R=$3; N=$4; shift 4
export OMP_NUM_THREADS=${THREADS:-2}
for i in $(seq $R); do
  p=$(/tmp/mb/probe | awk '{print $1}')
  a=$(/tmp/mb/wg-$A "$@" $N | awk '{print $3}'); b=$(/tmp/mb/wg-$B "$@" $N | awk '{print $3}')
  echo "$p $a $b"
done | python3 -c "
import sys,statistics as s
p=[l.split() for l in sys.stdin]
for reg in ('fast','SLOW'):
  q=[(float(a),float(b)) for r,a,b in p if r==reg]
  if q: print(reg, len(q), 'minA %.3f minB %.3f  B/A median %.3f  B wins %d/%d' % (min(a for a,_ in q), min(b for _,b in q), s.median(b/a for a,b in q), sum(b<a for a,b in q), len(q)))"
