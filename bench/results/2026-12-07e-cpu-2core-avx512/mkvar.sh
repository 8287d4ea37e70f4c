#!/bin/bash
# mkvar.sh NAME FILE...: compile the given kernels/*.cpp files (current tree) and link wg-NAME
set -e; cd /work/main; name=$1; shift; objs=()
for f in "$@"; do o=/tmp/v/$(basename $f .cpp)-$name.o
  c++ -O3 -DNDEBUG -fPIC -march=native -ffp-contract=off -fopenmp -std=c++20 -DMED3D_WITH_CUDA=1 -I engine/include -I kernels/include -I . -I kernels/cpu -isystem /usr/include/eigen3 -c $f -o $o; objs+=($o); done
g++ -O2 -g -std=c++20 -march=native -fopenmp -I kernels/include -I engine/include ${WG_SRC:-/tmp/wga.cpp} "${objs[@]}" build/libmed3d.a -lz -lpng -L/usr/local/cuda/lib64 -lcudart -lcublas -lnifticdf -lniftiio -lznz -o /tmp/mb/wg-$name
