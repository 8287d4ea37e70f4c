#!/bin/bash
# envab.sh WG "ENV=.." rounds reps args: same binary without and with the env setting, minima per round
W=/tmp/mb/wg-$1; E=$2; R=$3; N=$4; shift 4
export OMP_NUM_THREADS=${THREADS:-2}
for i in $(seq $R); do
  p=$(/tmp/mb/probe | awk '{print $1}')
  a=$($W "$@" $N | awk '{print $2}'); b=$(env $E $W "$@" $N | awk '{print $2}')
  echo "$p $a $b"
done | python3 -c "
import sys,statistics as s
p=[l.split() for l in sys.stdin]
q=[(float(a),float(b)) for r,a,b in p]
print('minA %.3f minB %.3f  B/A median %.3f regimes %s' % (min(a for a,_ in q), min(b for _,b in q), s.median(b/a for a,b in q), ''.join(r[0] for r,_,_ in p)))"
