// Trains a small 3D segmentation net (conv-BN-ReLU encoder with a strided and a dilated conv,
// transposed-conv decoder, trilinear upsampling, cross-entropy + soft Dice) on synthetic
// volumes holding one bright ellipsoid each, then reports Dice on volumes it never saw.
// Usage: train_synthetic [steps=300] [size=32] [batch=2] [seed=1]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <med3d/med3d.h>
#include <vector>

using namespace med3d;

namespace {

struct Batch {
  Tensor image;  // [N, 1, S, S, S] f32
  Tensor label;  // [N, S, S, S] i32, 1 inside the ellipsoid
};

// Ellipsoids of random centre and radii in noise; intensity alone does not separate them
// well (noise sd 0.8 vs contrast 1), so the net must use spatial context.
Batch make_batch(Context& context, int64_t batch, int64_t size) {
  Tensor noise = context.randn({batch, 1, size, size, size});
  Tensor params = context.rand({batch, 6}, DType::f64);
  std::vector<float> image = noise.to_vector<float>();
  std::vector<int32_t> label(static_cast<std::size_t>(batch * size * size * size));
  for (int64_t n = 0; n < batch; ++n) {
    double c[3], r[3];
    for (int a = 0; a < 3; ++a) {
      c[a] = size * (0.35 + 0.3 * params.at<double>({n, a}));
      r[a] = size * (0.12 + 0.15 * params.at<double>({n, 3 + a}));
    }
    for (int64_t z = 0; z < size; ++z)
      for (int64_t y = 0; y < size; ++y)
        for (int64_t x = 0; x < size; ++x) {
          const double q = std::pow((z - c[0]) / r[0], 2) + std::pow((y - c[1]) / r[1], 2) +
                           std::pow((x - c[2]) / r[2], 2);
          const std::size_t i = static_cast<std::size_t>(((n * size + z) * size + y) * size + x);
          image[i] = 0.8f * image[i] + (q <= 1.0 ? 1.0f : 0.0f);
          label[i] = q <= 1.0 ? 1 : 0;
        }
  }
  return {context.from_vector<float>({batch, 1, size, size, size}, image),
          context.from_vector<int32_t>({batch, size, size, size}, label)};
}

// Conv (no bias) -> BN -> ReLU with its parameters and running statistics.
struct ConvBnRelu {
  Tensor weight, gamma, beta, running_mean, running_var;
  Conv3dOptions options;
  bool transposed = false;

  ConvBnRelu(Context& context, int64_t in, int64_t out, int64_t kernel, Conv3dOptions conv,
             bool transpose = false)
      : options(conv), transposed(transpose) {
    const Shape shape = transposed ? Shape{in, out, kernel, kernel, kernel} : Shape{out, in, kernel, kernel, kernel};
    const double fan = static_cast<double>((transposed ? out : in) * kernel * kernel * kernel);
    weight = (context.randn(shape) * std::sqrt(2.0 / fan)).detach().set_requires_grad(true);
    gamma = context.ones({out}).set_requires_grad(true);
    beta = context.zeros({out}).set_requires_grad(true);
    running_mean = context.zeros({out});
    running_var = context.ones({out});
  }

  Tensor forward(const Tensor& x, bool training) const {
    Tensor y = transposed
                   ? conv_transpose3d(x, weight, {}, {.stride = options.stride, .padding = options.padding})
                   : conv3d(x, weight, {}, options);
    return relu(batch_norm3d(y, gamma, beta, running_mean, running_var, training));
  }
  void collect(std::vector<std::pair<std::string, Tensor>>& out, const std::string& name) const {
    out.emplace_back(name + ".weight", weight);
    out.emplace_back(name + ".gamma", gamma);
    out.emplace_back(name + ".beta", beta);
  }
};

struct TinySegNet {
  ConvBnRelu stem, down, dilated, up;
  Tensor classifier_weight, classifier_bias;

  explicit TinySegNet(Context& context)
      : stem(context, 1, 8, 3, {.padding = {1, 1, 1}}),
        down(context, 8, 16, 3, {.stride = {2, 2, 2}, .padding = {1, 1, 1}}),
        dilated(context, 16, 16, 3, {.padding = {2, 2, 2}, .dilation = {2, 2, 2}}),
        up(context, 16, 8, 2, {.stride = {2, 2, 2}}, /*transpose=*/true) {
    classifier_weight = (context.randn({2, 8, 1, 1, 1}) * 0.3).detach().set_requires_grad(true);
    classifier_bias = context.zeros({2}).set_requires_grad(true);
  }

  // Logits at half resolution, upsampled trilinearly to the input size.
  Tensor forward(const Tensor& x, bool training) const {
    Tensor h = stem.forward(x, training);
    h = dilated.forward(down.forward(h, training), training);
    h = up.forward(h, training);
    Tensor half = max_pool3d(conv3d(h, classifier_weight, classifier_bias), {2, 2, 2}, {2, 2, 2});
    return upsample_trilinear3d(half, {x.dim(2), x.dim(3), x.dim(4)}, false);
  }

  std::vector<std::pair<std::string, Tensor>> parameters() const {
    std::vector<std::pair<std::string, Tensor>> out;
    stem.collect(out, "stem");
    down.collect(out, "down");
    dilated.collect(out, "dilated");
    up.collect(out, "up");
    out.emplace_back("classifier.weight", classifier_weight);
    out.emplace_back("classifier.bias", classifier_bias);
    return out;
  }
};

double dice_of(const Tensor& prediction, const Tensor& label) {
  const std::vector<int32_t> p = prediction.to_vector<int32_t>(), g = label.to_vector<int32_t>();
  double both = 0, sizes = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    both += (p[i] == 1 && g[i] == 1);
    sizes += (p[i] == 1) + (g[i] == 1);
  }
  return sizes > 0 ? 2 * both / sizes : 1.0;
}

}  // namespace

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 300;
  const int64_t size = argc > 2 ? std::atoll(argv[2]) : 32;
  const int64_t batch = argc > 3 ? std::atoll(argv[3]) : 2;
  const uint64_t seed = argc > 4 ? std::strtoull(argv[4], nullptr, 10) : 1;
  if (steps <= 0 || size < 8 || size % 4 != 0 || batch <= 0) {
    std::fprintf(stderr, "usage: train_synthetic [steps>0] [size: multiple of 4, >= 8] [batch>0] [seed]\n");
    return 2;
  }
  try {
    Context context(Device::cpu(), seed);
    TinySegNet net(context);
    Sgd optimizer({ParamGroup{"all", net.parameters(), 0.05, 1e-4}}, SgdOptions{.momentum = 0.9});
    std::printf("training a 3D segmentation net on synthetic %lldx%lldx%lld volumes, batch %lld, %d steps\n",
                static_cast<long long>(size), static_cast<long long>(size), static_cast<long long>(size),
                static_cast<long long>(batch), steps);
    const auto start = std::chrono::steady_clock::now();
    double smoothed = 0;
    for (int step = 1; step <= steps; ++step) {
      Batch data = make_batch(context, batch, size);
      Tensor logits = net.forward(data.image, true);
      Tensor loss = cross_entropy(logits, data.label) + soft_dice_loss(logits, data.label);
      optimizer.zero_grad();
      backward(loss);
      optimizer.step();
      const double value = loss.item<double>();
      smoothed = step == 1 ? value : 0.9 * smoothed + 0.1 * value;
      if (step % 10 == 0 || step == 1 || step == steps) {
        const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const double rate = step / elapsed;
        std::printf("step %4d/%d  loss %.4f (smoothed %.4f)  %.2f steps/s  ETA %.0f s\n", step, steps, value,
                    smoothed, rate, (steps - step) / rate);
        std::fflush(stdout);
      }
    }
    NoGrad no_grad(context);
    Batch test = make_batch(context, 4, size);
    const double dice = dice_of(argmax(net.forward(test.image, false)), test.label);
    std::printf("Dice on 4 unseen volumes: %.4f\n", dice);
    return 0;
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
