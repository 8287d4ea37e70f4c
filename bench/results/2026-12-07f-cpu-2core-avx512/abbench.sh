#!/bin/bash
# abbench.sh A B rounds layer pass [runs]: per round bench-A then bench-B (--only layer), the pass's ours_ms and speed_vs_ref
A=$1; B=$2; R=$3; L=$4; P=$5; N=${6:-20}
for i in $(seq $R); do
  p=$(/tmp/mb/probe | awk '{print $1}')
  a=$(/tmp/mb/bench-$A conv --threads 2 --only $L --runs $N 2>/dev/null | awk -v P=$P '$2==P {print $7, $14}')
  b=$(/tmp/mb/bench-$B conv --threads 2 --only $L --runs $N 2>/dev/null | awk -v P=$P '$2==P {print $7, $14}')
  echo "$p $a $b"
done | tee /tmp/mb/last_ab.txt | python3 -c "
import sys,statistics as s
p=[l.split() for l in sys.stdin]
for reg in ('fast','SLOW'):
  q=[tuple(map(float,x[1:5])) for x in p if x[0]==reg]
  if q: print(reg, len(q), 'A ms %.3f ratio %.3f | B ms %.3f ratio %.3f | B/A time %.3f, B faster %d/%d' % (s.median(a for a,_,_,_ in q), s.median(r for _,r,_,_ in q), s.median(b for _,_,b,_ in q), s.median(r for _,_,_,r in q), s.median(b/a for a,_,b,_ in q), sum(b<a for a,_,b,_ in q), len(q)))"
