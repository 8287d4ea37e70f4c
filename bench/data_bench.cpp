// med3d-bench-data: throughput of the data pipeline on synthetic CT-like volumes.
//
// What it covers: "decode" (int16 Hounsfield voxels held in memory -> f32 with CT windowing
// to [-1, 1], u8 labels -> i32; reading and gunzipping NIfTI files is NOT included), the
// Med3D crop (between 2x the foreground box and the whole volume) resized to the output
// patch, and the full augmentation (rotation, scale, translation, flips in one trilinear /
// nearest pass, then gamma and Gaussian noise) -- i.e. everything Loader does per sample,
// with the volume cache off so every sample decodes again.
//
// Reports, for 1 and 2 workers: volumes/s when the consumer takes batches as fast as it can,
// and the mean wait per next() of a training loop that spends --step-ms per batch without
// using the CPU (a GPU-bound step, simulated by sleeping).
//
// Usage: med3d-bench-data [--size 128] [--volumes 24] [--cases 4] [--step-ms 500]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "med3d/data/augment.h"
#include "med3d/data/loader.h"

using namespace med3d;
using namespace med3d::data;
using Clock = std::chrono::steady_clock;

namespace {

struct EncodedCase {
  int64_t side = 0;
  std::vector<int16_t> hu;      // as stored in a CT file
  std::vector<uint8_t> labels;  // 0 background, 1 organ, 2 lesion
};

// An ellipsoidal body of soft tissue in air with a bony shell, an organ and a lesion, plus
// noise, all from a seeded generator so every run sees the same data.
EncodedCase make_case(int64_t side, uint64_t seed) {
  EncodedCase c;
  c.side = side;
  const auto n = static_cast<std::size_t>(side * side * side);
  c.hu.resize(n);
  c.labels.resize(n);
  SampleRng rng(seed);
  const double s = static_cast<double>(side);
  const double oz = s * rng.uniform(0.4, 0.6), oy = s * rng.uniform(0.4, 0.6), ox = s * rng.uniform(0.35, 0.65);
  const double organ_r = s * rng.uniform(0.1, 0.16), lesion_r = organ_r * 0.35;
  for (int64_t d = 0; d < side; ++d)
    for (int64_t h = 0; h < side; ++h)
      for (int64_t w = 0; w < side; ++w) {
        const double z = (static_cast<double>(d) - s / 2) / (0.45 * s);
        const double y = (static_cast<double>(h) - s / 2) / (0.35 * s);
        const double x = (static_cast<double>(w) - s / 2) / (0.45 * s);
        const double body = z * z + y * y + x * x;
        const double organ = std::hypot(static_cast<double>(d) - oz, static_cast<double>(h) - oy,
                                        static_cast<double>(w) - ox);
        double value = -1000;
        uint8_t label = 0;
        if (body < 1) value = body > 0.85 ? 700 : 40;
        if (organ < organ_r) {
          value = 60;
          label = 1;
        }
        if (organ < lesion_r) {
          value = 20;
          label = 2;
        }
        const auto i = static_cast<std::size_t>((d * side + h) * side + w);
        // Cheap per-voxel noise (a hash, not Philox) keeps generation fast.
        value += 10.0 * (static_cast<double>(splitmix64(seed + i) >> 11) / 9007199254740992.0 - 0.5);
        c.hu[i] = static_cast<int16_t>(value);
        c.labels[i] = label;
      }
  return c;
}

// Decode: HU -> f32 windowed to [-1000, 1000] HU and scaled to [-1, 1]; labels -> i32.
std::pair<Tensor, Tensor> decode(const Context& context, const EncodedCase& c) {
  Tensor image = context.empty({c.side, c.side, c.side});
  Tensor label = context.empty({c.side, c.side, c.side}, DType::i32);
  float* x = image.data<float>();
  int32_t* l = label.data<int32_t>();
  for (std::size_t i = 0; i < c.hu.size(); ++i) {
    const float hu = std::fmin(std::fmax(static_cast<float>(c.hu[i]), -1000.0f), 1000.0f);
    x[i] = hu * 0.001f;
    l[i] = c.labels[i];
  }
  return {image, label};
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// CPU time of this thread: stage costs that other processes on a shared machine do not inflate.
double thread_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// The machine's load average, printed with the numbers: 2 cores shared with other jobs.
std::string load_average() {
  std::FILE* f = std::fopen("/proc/loadavg", "r");
  if (!f) return "unknown";
  char buffer[64] = {};
  const bool ok = std::fgets(buffer, sizeof buffer, f) != nullptr;
  std::fclose(f);
  std::string s = ok ? buffer : "unknown";
  return s.substr(0, s.find(' ', s.find(' ', s.find(' ') + 1) + 1));
}

}  // namespace

int main(int argc, char** argv) {
  int64_t side = 128, volumes = 24, cases = 4, step_ms = 500;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int64_t value = std::atoll(argv[i + 1]);
    if (flag == "--size") side = value;
    else if (flag == "--volumes") volumes = value;
    else if (flag == "--cases") cases = value;
    else if (flag == "--step-ms") step_ms = value;
    else {
      std::fprintf(stderr, "unknown flag %s\nusage: %s [--size 128] [--volumes 24] [--cases 4] [--step-ms 500]\n",
                   flag.c_str(), argv[0]);
      return 2;
    }
  }
  if (side < 8 || volumes < 1 || cases < 2 || step_ms < 0) {
    std::fprintf(stderr, "need --size >= 8, --volumes >= 1, --cases >= 2 (two domains), --step-ms >= 0\n");
    return 2;
  }
  try {
    Context context;
    std::vector<std::shared_ptr<const EncodedCase>> encoded;
    for (int64_t c = 0; c < cases; ++c)
      encoded.push_back(std::make_shared<const EncodedCase>(make_case(side, 1000 + static_cast<uint64_t>(c))));

    // Two domains sharing the cases (even / odd), as balanced sampling would see them.
    CaseSource source;
    source.domains = 2;
    source.cases = [cases](int64_t d) { return (cases + 1 - d) / 2; };
    source.load = [context, encoded](int64_t d, int64_t i) {
      return decode(context, *encoded[static_cast<std::size_t>(2 * i + d)]);
    };

    LoaderOptions options;
    options.batch_size = 1;
    options.patch = {side, side, side};
    options.crop_mode = CropMode::med3d_resize;
    options.augment = true;
    options.augment_options.noise_probability = 1.0;  // worst case: every intensity step runs
    options.augment_options.gamma_probability = 1.0;
    options.queue_depth = 4;
    options.cache_bytes = 0;
    options.seed = 7;

    // Stage costs on this thread, for reading the throughput numbers.
    {
      const int reps = 3;
      double t_decode = 0, t_geometry = 0, t_intensity = 0;
      for (int r = 0; r < reps; ++r) {
        double start = thread_cpu_seconds();
        auto [image, label] = decode(context, *encoded[0]);
        t_decode += thread_cpu_seconds() - start;
        start = thread_cpu_seconds();
        SampleRng rng(derive_seed(7, 0, static_cast<uint64_t>(r)));
        const Index3 n{side, side, side};
        const auto fg = foreground_box(label);
        const Box3 box = med3d_crop_box(n, fg, rng);
        AugmentParams params = draw_augment_params(options.augment_options, n, fg, rng);
        auto sample = resample(image, label, augment_map(params, n, box_map(box, n)), n, -1.0);
        t_geometry += thread_cpu_seconds() - start;
        start = thread_cpu_seconds();
        apply_intensity(sample.first, params, 1);
        t_intensity += thread_cpu_seconds() - start;
      }
      std::printf("load average before: %s (2 cores shared)\n", load_average().c_str());
      std::printf("volume %lld^3, thread CPU time per volume: decode %.1f ms, foreground box + crop + "
                  "affine resample %.1f ms, gamma + noise %.1f ms\n",
                  static_cast<long long>(side), 1e3 * t_decode / reps, 1e3 * t_geometry / reps,
                  1e3 * t_intensity / reps);
    }

    for (int workers : {1, 2}) {
      options.workers = workers;
      double rate = 0;
      {
        Loader loader(context, source, options);
        loader.next();  // warm-up: threads started, first batch through
        const auto start = Clock::now();
        for (int64_t i = 0; i < volumes; ++i) loader.next();
        rate = static_cast<double>(volumes) / seconds_since(start);
      }
      double wait = 0;
      const int64_t steps = std::max<int64_t>(4, volumes / 4);
      {
        Loader loader(context, source, options);
        loader.next();
        for (int64_t i = 0; i < steps; ++i) {
          std::this_thread::sleep_for(std::chrono::milliseconds(step_ms));
          const auto start = Clock::now();
          loader.next();
          wait += seconds_since(start);
        }
      }
      std::printf("workers %d: %.2f volumes/s (%lld volumes); training loop with %lld ms steps waits %.1f ms per batch\n",
                  workers, rate, static_cast<long long>(volumes), static_cast<long long>(step_ms),
                  1e3 * wait / static_cast<double>(steps));
    }
    std::printf("load average after: %s\n", load_average().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "med3d-bench-data: %s\n", e.what());
    return 1;
  }
}
