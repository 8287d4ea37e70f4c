// Shared pieces of the med3d subcommands: the options every command takes (--device,
// --threads, --seed, --config), the JSON config format, and writing the resolved values.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "med3d/context.h"

namespace med3d::cli {

// --config FILE.json sets any option of the subcommand (keys are the long option names without
// dashes); values given on the command line win over the file.
class JsonConfig : public CLI::Config {
 public:
  std::string to_config(const CLI::App* app, bool default_also, bool write_description,
                        std::string prefix) const override;
  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override;
};

struct CommonOptions {
  std::string device = "auto";  // auto | cpu | cuda[:N]
  int threads = 0;              // 0: OpenMP's default (all cores)
  uint64_t seed = 0;
};

// The arguments a JSON config file stands for ({"lr": 0.1, "patch": [32, 32, 32], "flip": true}
// -> --lr 0.1 --patch 32 32 32 --flip); main() puts them before the command line's own, and
// every subcommand keeps the last value given, so the command line wins.
std::vector<std::string> config_arguments(const std::string& path);

// The command line with `--config FILE` replaced by FILE's arguments, placed right after the
// subcommand name; `--resume RUN` without --config reads RUN/config.json (the saved options of
// the run). Arguments before the subcommand are left alone.
std::vector<std::string> expand_config(const std::vector<std::string>& args);

// The NIfTI files (.nii, .nii.gz) of `in`: the file itself, or a folder's files sorted by name.
std::vector<std::string> nifti_inputs(const std::string& in);

// Adds --device, --threads, --seed and --config to `command`.
void add_common_options(CLI::App& command, CommonOptions& options);

// Applies --threads and makes the Context for --seed. The Context is a CPU one: data is read
// and prepared on the CPU; networks move to compute_device().
Context make_context(const CommonOptions& options);
// The device --device names: auto is cuda:0 when a (real) CUDA device is usable, else the CPU.
// A CUDA request in a CPU-only build, or for an absent device, is an error saying what to do.
Device compute_device(const CommonOptions& options);

// Writes every option of `command` with its resolved value (command line, config file or
// default) as JSON to `path`, atomically; a later `--config path` repeats the run.
void save_resolved_config(const CLI::App& command, const std::string& path);

}  // namespace med3d::cli
