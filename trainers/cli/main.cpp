// med3d: train, transfer, evaluate and run Med3D models on NIfTI data. `med3d --help` lists
// the subcommands; each has its own --help.
#include <exception>
#include <iostream>

#include "commands.h"
#include "med3d/error.h"

int main(int argc, char** argv) {
  CLI::App app{"med3d: 3D medical image deep learning (Med3D, MedicalNet, DenseASPP-3D)"};
  app.require_subcommand(1);
  med3d::cli::register_info(app);
  med3d::cli::register_synth(app);
  med3d::cli::register_pretrain(app);
  med3d::cli::register_train(app);
  med3d::cli::register_predict(app);
  med3d::cli::register_eval(app);
  med3d::cli::register_forward(app);
  try {
    app.parse(argc, argv);
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
