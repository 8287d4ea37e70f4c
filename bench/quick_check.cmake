# bench_quick: runs every med3d-bench subcommand with --quick on 2 threads and checks that each
# writes JSON whose rows hold positive, finite numbers (the reference columns may be null when
# oneDNN is missing). It checks that the harness works, never how fast anything is.
# Usage: cmake -DBENCH=path/to/med3d-bench -DWORK_DIR=dir -P quick_check.cmake
file(MAKE_DIRECTORY ${WORK_DIR})

function(check_rows json_file numeric_fields)
  file(READ ${json_file} doc)
  string(JSON rows GET "${doc}" rows)
  string(JSON n LENGTH "${rows}")
  if(n EQUAL 0)
    message(FATAL_ERROR "${json_file}: no rows")
  endif()
  math(EXPR last "${n} - 1")
  foreach(i RANGE ${last})
    foreach(field IN LISTS numeric_fields)
      string(JSON type TYPE "${rows}" ${i} ${field})
      string(JSON value GET "${rows}" ${i} ${field})
      if(NOT type STREQUAL "NUMBER" OR NOT value GREATER 0)
        message(FATAL_ERROR "${json_file}: row ${i} field ${field} is '${value}' (${type}); expected a positive number")
      endif()
    endforeach()
  endforeach()
  message(STATUS "${json_file}: ${n} rows ok")
endfunction()

function(run_bench name)
  execute_process(COMMAND ${BENCH} ${ARGN} --quick --threads 2 --json ${WORK_DIR}/${name}.json
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message(STATUS "${out}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "med3d-bench ${ARGN} failed (${rc}): ${err}")
  endif()
endfunction()

run_bench(conv conv --plot ${WORK_DIR}/conv.png)
check_rows(${WORK_DIR}/conv.json "ours_ms;ours_min_ms;nominal_gflops;effective_gflops;eff_of_peak;ours_packed_ms;handoff_ratio")
if(NOT EXISTS ${WORK_DIR}/conv.png)
  message(FATAL_ERROR "conv --plot wrote no ${WORK_DIR}/conv.png")
endif()
run_bench(ops ops)
check_rows(${WORK_DIR}/ops.json "ours_ms;ours_min_ms;gbs;frac_of_copy;handoff_ratio")
run_bench(gemm gemm --only square256,wgrad_l1)
check_rows(${WORK_DIR}/gemm.json "ours_ms;ours_gflops;eigen_gflops;speed_vs_eigen")
run_bench(step step --arch resnet10 --input 1x1x16x32x32)
check_rows(${WORK_DIR}/step.json "step_ms;forward_ms;backward_ms;update_ms;peak_rss_mib;loss")

# The host's regime (bench/common.h), measured on the 2 threads: both line times positive, and
# named from them.
function(check_regime json_file)
  file(READ ${json_file} doc)
  foreach(path IN LISTS ARGN)
    string(REPLACE "." ";" keys "${path}")
    string(JSON own GET "${doc}" ${keys} own_line_ns)
    string(JSON handoff GET "${doc}" ${keys} handoff_line_ns)
    string(JSON name GET "${doc}" ${keys} regime)
    if(NOT own GREATER 0 OR NOT handoff GREATER 0 OR NOT name MATCHES "^(fast|slow)$")
      message(FATAL_ERROR "${json_file}: ${path} is own ${own} ns, hand-off ${handoff} ns, '${name}'")
    endif()
  endforeach()
endfunction()
check_regime(${WORK_DIR}/conv.json machine.host_regime host_regime_after)
check_regime(${WORK_DIR}/ops.json machine.host_regime host_regime_after)
check_regime(${WORK_DIR}/step.json host_regime.before host_regime.after)
message(STATUS "host regimes recorded")

# Misspelt names and malformed shapes are refused up front: a non-zero exit, a message naming the
# bad value (and, for --only, the names to pick from), no JSON written, nothing measured.
function(expect_refusal name expected)
  execute_process(COMMAND ${BENCH} ${ARGN} --quick --threads 2 --json ${WORK_DIR}/${name}.json
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0 OR NOT err MATCHES "${expected}" OR EXISTS ${WORK_DIR}/${name}.json OR out MATCHES "host regime")
    message(FATAL_ERROR "med3d-bench ${ARGN}: expected a refusal matching '${expected}' before any measurement, "
                        "got exit ${rc}, stderr '${err}', stdout '${out}'")
  endif()
endfunction()
expect_refusal(bad_conv_only "no conv layer named 'layer9'; pick from stem, layer1" conv --only stem,layer9)
expect_refusal(bad_ops_only "no op named 'bn'; pick from batch_norm" ops --only bn)
expect_refusal(bad_gemm_only "no shape named 'sq'; pick from square256" gemm --only sq)
expect_refusal(bad_arch "--arch must be resnet10, .* got 'resnet18abc'" step --arch resnet18abc)
expect_refusal(bad_input "--input must be NxCxDxHxW .* got '2xax3x4x5'" step --input 2xax3x4x5)
message(STATUS "bad names and shapes refused")
