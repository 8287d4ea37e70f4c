// The med3d program's subcommands. Each cmd_<name>.cpp defines register_<name>, which adds its
// subcommand with options and callback to the app; main.cpp calls every one. Callbacks print
// to stdout (results) and stderr (progress); a med3d::Error becomes exit code 1 with its
// message, a usage error exit code 2 (CLI11's convention).
#pragma once

#include <CLI/CLI.hpp>

namespace med3d::cli {

void register_info(CLI::App& app);  // med3d info: NIfTI header, geometry, intensities, labels
void register_eval(CLI::App& app);  // med3d eval: segmentation / classification metrics








}  // namespace med3d::cli
