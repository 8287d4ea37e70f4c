// End-to-end check that the ops, the tape and SGD train together: a 3-layer net overfits one
// synthetic 16^3 volume.
#include "test_util.h"

using namespace med3d;

namespace {

Tensor kaiming(Context& context, const Shape& shape, int64_t fan_in) {
  return (context.randn(shape) * std::sqrt(2.0 / static_cast<double>(fan_in))).detach().set_requires_grad(true);
}

}  // namespace

TEST_CASE("overfit: conv-bn-relu, dilated conv, transposed conv, trilinear upsampling learn one volume",
          "[overfit]") {
  Context context(Device::cpu(), 7);
  const int64_t s = 16;
  // Two overlapping balls: label 1 inside the first, 2 inside the second, 0 elsewhere.
  std::vector<float> image(s * s * s);
  std::vector<int32_t> label(s * s * s);
  Tensor noise = context.randn({s * s * s});
  for (int64_t z = 0; z < s; ++z)
    for (int64_t y = 0; y < s; ++y)
      for (int64_t x = 0; x < s; ++x) {
        const int64_t i = (z * s + y) * s + x;
        const bool a = (z - 6) * (z - 6) + (y - 6) * (y - 6) + (x - 7) * (x - 7) <= 16;
        const bool b = (z - 10) * (z - 10) + (y - 10) * (y - 10) + (x - 9) * (x - 9) <= 12;
        label[i] = b ? 2 : a ? 1 : 0;
        image[i] = (a ? 1.0f : 0.0f) + (b ? -1.0f : 0.0f) + 0.3f * noise.at<float>({i});
      }
  Tensor volume = context.from_vector<float>({1, 1, s, s, s}, image);
  Tensor target = context.from_vector<int32_t>({1, s, s, s}, label);

  Tensor w1 = kaiming(context, {16, 1, 3, 3, 3}, 27);
  Tensor gamma = context.ones({16}).set_requires_grad(true);
  Tensor beta = context.zeros({16}).set_requires_grad(true);
  Tensor mean = context.zeros({16}), var = context.ones({16});
  Tensor w2 = kaiming(context, {16, 16, 3, 3, 3}, 16 * 27);
  Tensor b2 = context.zeros({16}).set_requires_grad(true);
  Tensor w3 = kaiming(context, {16, 3, 2, 2, 2}, 16 * 8);
  Tensor b3 = context.zeros({3}).set_requires_grad(true);

  auto forward = [&](bool training) {
    Tensor h = relu(batch_norm3d(conv3d(volume, w1, {}, {.padding = {1, 1, 1}}), gamma, beta, mean, var, training));
    h = relu(conv3d(h, w2, b2, {.stride = {2, 2, 2}, .padding = {2, 2, 2}, .dilation = {2, 2, 2}}));  // 8^3
    h = conv_transpose3d(h, w3, b3, {.stride = {2, 2, 2}});                                          // 16^3
    h = avg_pool3d(h, {2, 2, 2}, {2, 2, 2});                                                          // 8^3
    return upsample_trilinear3d(h, {s, s, s}, false);                                                 // 16^3
  };
  auto accuracy = [&](const Tensor& logits) {
    const std::vector<int32_t> predicted = argmax(logits).to_vector<int32_t>();
    double correct = 0;
    for (std::size_t i = 0; i < predicted.size(); ++i) correct += predicted[i] == label[i];
    return correct / static_cast<double>(predicted.size());
  };

  Sgd optimizer({ParamGroup{"net", {{"w1", w1}, {"gamma", gamma}, {"beta", beta}, {"w2", w2}, {"b2", b2},
                                    {"w3", w3}, {"b3", b3}}, 0.1, 0.0}},
                SgdOptions{.momentum = 0.9});
  double first_loss = 0, last_accuracy = 0;
  for (int step = 0; step < 400 && last_accuracy <= 0.95; ++step) {
    Tensor logits = forward(true);
    Tensor loss = cross_entropy(logits, target);
    if (step == 0) first_loss = loss.item<double>();
    optimizer.zero_grad();
    backward(loss);
    optimizer.step();
    NoGrad no_grad(context);
    last_accuracy = accuracy(forward(true));
  }
  INFO("first loss " << first_loss << ", final training-mode accuracy " << last_accuracy);
  REQUIRE(last_accuracy > 0.95);
  NoGrad no_grad(context);
  const double eval_loss = cross_entropy(forward(true), target).item<double>();
  REQUIRE(eval_loss < 0.5 * first_loss);
}
