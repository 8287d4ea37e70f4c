#!/bin/bash
export OMP_NUM_THREADS=2 MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=134217728
end=$((SECONDS + ${1:-240}))
while [ $SECONDS -lt $end ]; do
  echo "$(date +%T) regime $(/tmp/gt/rg) default $(/tmp/mb/wg-nopt f 2 64 8 16 16 128 3 2 1 1 60 | awk '{print $3}') nopt $(NOPT=1 /tmp/mb/wg-nopt f 2 64 8 16 16 128 3 2 1 1 60 | awk '{print $3}') packed $(PACKED=1 /tmp/mb/wg-nopt f 2 64 8 16 16 128 3 2 1 1 60 | awk '{print $3}') grouped $(GROUPED=1 /tmp/mb/wg-nopt f 2 64 8 16 16 128 3 2 1 1 60 | awk '{print $3}')"
done
