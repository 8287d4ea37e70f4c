// The med3d program's subcommands. Each cmd_<name>.cpp defines register_<name>, which adds its
// subcommand with options and callback to the app; main.cpp calls every one. Callbacks print
// to stdout (results) and stderr (progress); a med3d::Error becomes exit code 1 with its
// message, a usage error exit code 2 (CLI11's convention).
#pragma once

#include <CLI/CLI.hpp>

namespace med3d::cli {

void register_info(CLI::App& app);      // NIfTI header, geometry, intensities, labels
void register_synth(CLI::App& app);     // synthetic MSD dataset
void register_pretrain(CLI::App& app);  // Med3D multi-domain co-training
void register_train(CLI::App& app);     // training / transfer on one dataset
void register_predict(CLI::App& app);   // sliding-window inference to NIfTI
void register_liver(CLI::App& app);     // two-stage liver cascade
void register_eval(CLI::App& app);      // segmentation / classification metrics
void register_forward(CLI::App& app);   // one model's stage outputs

}  // namespace med3d::cli
