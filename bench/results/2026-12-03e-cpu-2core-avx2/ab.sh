#!/bin/bash
# usage: ab.sh A B rounds reps args...   (paired minima: B/A ratio per round)
A=$1; B=$2; R=$3; N=$4; shift 4
export OMP_NUM_THREADS=${THREADS:-2}
for i in $(seq $R); do
  a=$(/tmp/mb/wg-$A "$@" $N | awk '{print $3}'); b=$(/tmp/mb/wg-$B "$@" $N | awk '{print $3}')
  echo "$a $b"
done | python3 -c "
import sys,statistics as s
p=[tuple(map(float,l.split())) for l in sys.stdin]
r=[b/a for a,b in p]
print('minA %.3f minB %.3f  B/A median %.3f  B wins %d/%d' % (min(a for a,_ in p), min(b for _,b in p), s.median(r), sum(b<a for a,b in p), len(p)))"
