#!/bin/bash
# mkbench.sh NAME FILE...: the given kernels/*.cpp files (current tree) compiled and linked into /tmp/mb/bench-NAME
set -e; cd /work/main; name=$1; shift; objs=()
for f in "$@"; do o=/tmp/v/$(basename $f .cpp)-$name.o
  c++ -O3 -DNDEBUG -fPIC -march=native -ffp-contract=off -fopenmp -std=c++20 -DMED3D_WITH_CUDA=1 -I engine/include -I kernels/include -I . -I kernels/cpu -isystem /usr/include/eigen3 -c $f -o $o; objs+=($o); done
cd build/bench
link=$(cat CMakeFiles/med3d-bench.dir/link.txt)
link=${link/-o med3d-bench/${objs[*]} -o /tmp/mb/bench-$name}
eval "$link"
