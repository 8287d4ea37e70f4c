// med3d: train, transfer, evaluate and run Med3D models on NIfTI data. `med3d --help` lists
// the subcommands; each has its own --help.
#include <algorithm>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>
#include <iostream>

#include "commands.h"
#include "common.h"
#include "med3d/error.h"

int main(int argc, char** argv) {
  CLI::App app{"med3d: 3D medical image deep learning (Med3D, MedicalNet, DenseASPP-3D)", "med3d"};
  app.require_subcommand(1);
  // A value from --config comes first on the expanded command line; the user's own comes later
  // and wins.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  med3d::cli::register_info(app);
  med3d::cli::register_synth(app);
  med3d::cli::register_pretrain(app);
  med3d::cli::register_train(app);
  med3d::cli::register_predict(app);
  med3d::cli::register_liver(app);
  med3d::cli::register_eval(app);
  med3d::cli::register_forward(app);
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    args = med3d::cli::expand_config(args);
  } catch (const std::exception& e) {
    std::cerr << "med3d: error: " << e.what() << "\n";
    return 1;
  }
  std::reverse(args.begin(), args.end());  // CLI11 takes the arguments reversed
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const med3d::Error& e) {
    std::cerr << "med3d: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "med3d: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
