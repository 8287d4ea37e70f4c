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
check_rows(${WORK_DIR}/conv.json "ours_ms;ours_min_ms;nominal_gflops;effective_gflops;eff_of_peak")
if(NOT EXISTS ${WORK_DIR}/conv.png)
  message(FATAL_ERROR "conv --plot wrote no ${WORK_DIR}/conv.png")
endif()
run_bench(ops ops)
check_rows(${WORK_DIR}/ops.json "ours_ms;ours_min_ms;gbs;frac_of_copy")
run_bench(step step --arch resnet10 --input 1x1x16x32x32)
check_rows(${WORK_DIR}/step.json "step_ms;forward_ms;backward_ms;update_ms;peak_rss_mib;loss")
