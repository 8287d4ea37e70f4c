#include <atomic>
#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "med3d/data/loader.h"
#include "test_util.h"

using namespace med3d;
using namespace med3d::data;

namespace {

constexpr int64_t kSide = 12;

// Cases of 12^3 voxels whose values identify (domain, case); a foreground cube per case.
// `loads` counts calls (shared by copies of the source).
CaseSource synthetic_source(Context context, std::vector<int64_t> cases,
                            std::shared_ptr<std::atomic<int64_t>> loads) {
  CaseSource source;
  source.domains = static_cast<int64_t>(cases.size());
  source.cases = [cases](int64_t d) { return cases[static_cast<std::size_t>(d)]; };
  source.load = [context, loads](int64_t d, int64_t c) {
    ++*loads;
    Tensor image = context.empty({kSide, kSide, kSide});
    Tensor label = context.zeros({kSide, kSide, kSide}, DType::i32);
    float* x = image.data<float>();
    int32_t* l = label.data<int32_t>();
    for (int64_t i = 0; i < image.numel(); ++i) x[i] = static_cast<float>(100 * d + 10 * c) + static_cast<float>(i % 97) * 0.01f;
    const int64_t lo = 2 + (c % 4);
    for (int64_t z = lo; z < lo + 4; ++z)
      for (int64_t y = 3; y < 7; ++y)
        for (int64_t w = lo; w < lo + 5; ++w) l[(z * kSide + y) * kSide + w] = static_cast<int32_t>(1 + d);
    return std::make_pair(image, label);
  };
  return source;
}

LoaderOptions small_options(int workers) {
  LoaderOptions o;
  o.batch_size = 2;
  o.patch = {8, 8, 8};
  o.workers = workers;
  o.queue_depth = 2;
  o.seed = 17;
  return o;
}

std::vector<Batch> take(Loader& loader, int count) {
  std::vector<Batch> batches;
  for (int i = 0; i < count; ++i) batches.push_back(loader.next());
  return batches;
}

void require_same(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    REQUIRE(a[i].epoch == b[i].epoch);
    REQUIRE(a[i].index == b[i].index);
    REQUIRE(a[i].domain == b[i].domain);
    REQUIRE(a[i].case_index == b[i].case_index);
    REQUIRE(a[i].sample_seed == b[i].sample_seed);
    REQUIRE(a[i].image.to_vector<float>() == b[i].image.to_vector<float>());
    REQUIRE(a[i].label.to_vector<int32_t>() == b[i].label.to_vector<int32_t>());
  }
}

}  // namespace

TEST_CASE("loader: batches have the training layout and follow the epoch plan", "[loader]") {
  Context context;
  auto loads = std::make_shared<std::atomic<int64_t>>(0);
  Loader loader(context, synthetic_source(context, {3, 1, 5}, loads), small_options(2));
  REQUIRE(loader.batches_per_epoch() == 7);  // 15 balanced samples, batch 2, tail dropped
  const auto plan0 = epoch_plan({3, 1, 5}, true, 17, 0);
  const auto plan1 = epoch_plan({3, 1, 5}, true, 17, 1);
  for (int i = 0; i < 9; ++i) {
    Batch b = loader.next();
    REQUIRE(b.image.shape() == Shape({2, 1, 8, 8, 8}));
    REQUIRE(b.label.shape() == Shape({2, 8, 8, 8}));
    REQUIRE(b.label.dtype() == DType::i32);
    REQUIRE(b.epoch == i / 7);
    REQUIRE(b.index == i % 7);
    const auto& plan = b.epoch == 0 ? plan0 : plan1;
    for (int k = 0; k < 2; ++k) {
      const auto expected = plan[static_cast<std::size_t>(b.index * 2 + k)];
      REQUIRE(b.domain[static_cast<std::size_t>(k)] == expected.first);
      REQUIRE(b.case_index[static_cast<std::size_t>(k)] == expected.second);
      REQUIRE(b.sample_seed[static_cast<std::size_t>(k)] ==
              derive_seed(17, static_cast<uint64_t>(b.epoch), static_cast<uint64_t>(b.index * 2 + k)));
    }
    // Labels of a domain-d case are {0, d + 1} only.
    for (int k = 0; k < 2; ++k) {
      const std::vector<int32_t> v = b.label.to_vector<int32_t>();
      for (std::size_t j = static_cast<std::size_t>(k) * 512; j < static_cast<std::size_t>(k + 1) * 512; ++j)
        REQUIRE((v[j] == 0 || v[j] == b.domain[static_cast<std::size_t>(k)] + 1));
    }
  }
}

TEST_CASE("loader: without augmentation a sample is exactly the sampled patch", "[loader]") {
  Context context;
  auto loads = std::make_shared<std::atomic<int64_t>>(0);
  CaseSource source = synthetic_source(context, {2, 2}, loads);
  LoaderOptions o = small_options(2);
  o.augment = false;
  o.foreground_fraction = 0.5;
  Loader loader(context, source, o);
  for (int i = 0; i < 3; ++i) {
    Batch b = loader.next();
    for (int k = 0; k < 2; ++k) {
      auto [image, label] = source.load(b.domain[static_cast<std::size_t>(k)], b.case_index[static_cast<std::size_t>(k)]);
      SampleRng rng(b.sample_seed[static_cast<std::size_t>(k)]);
      const Box3 box = sample_patch_box(label, {8, 8, 8}, 0.5, rng);
      const std::vector<float> expected = crop(image, box).to_vector<float>();
      const std::vector<float> got = b.image.to_vector<float>();
      REQUIRE(std::vector<float>(got.begin() + k * 512, got.begin() + (k + 1) * 512) == expected);
      const std::vector<int32_t> expected_label = crop(label, box).to_vector<int32_t>();
      const std::vector<int32_t> got_label = b.label.to_vector<int32_t>();
      REQUIRE(std::vector<int32_t>(got_label.begin() + k * 512, got_label.begin() + (k + 1) * 512) == expected_label);
    }
  }
}

TEST_CASE("loader: same seed gives identical batches, for 1 and 2 workers alike", "[loader]") {
  Context context;
  auto loads = std::make_shared<std::atomic<int64_t>>(0);
  for (CropMode mode : {CropMode::patch, CropMode::med3d_resize}) {
    LoaderOptions o = small_options(2);
    o.crop_mode = mode;
    std::vector<Batch> a, b, one, other;
    {
      Loader loader(context, synthetic_source(context, {3, 2}, loads), o);
      a = take(loader, 6);  // crosses the epoch boundary (2 batches per epoch)
    }
    {
      Loader loader(context, synthetic_source(context, {3, 2}, loads), o);
      b = take(loader, 6);
    }
    require_same(a, b);
    o.workers = 1;
    o.queue_depth = 1;
    {
      Loader loader(context, synthetic_source(context, {3, 2}, loads), o);
      one = take(loader, 6);
    }
    require_same(a, one);
    o.seed = 18;
    {
      Loader loader(context, synthetic_source(context, {3, 2}, loads), o);
      other = take(loader, 6);
    }
    REQUIRE(other[0].image.to_vector<float>() != a[0].image.to_vector<float>());
  }
}

TEST_CASE("loader: balanced sampling shows every domain as often as the largest", "[loader]") {
  const std::vector<int64_t> cases{3, 1, 5};
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    const auto plan = epoch_plan(cases, true, 4, epoch);
    REQUIRE(plan.size() == 15);
    std::map<int64_t, int64_t> per_domain;
    std::map<std::pair<int64_t, int64_t>, int64_t> per_case;
    for (const auto& dc : plan) {
      ++per_domain[dc.first];
      ++per_case[dc];
    }
    REQUIRE(per_domain == std::map<int64_t, int64_t>{{0, 5}, {1, 5}, {2, 5}});
    // Within a domain cases are used as evenly as possible: 5 over 3 cases is 2, 2, 1.
    std::vector<int64_t> domain0{per_case[{0, 0}], per_case[{0, 1}], per_case[{0, 2}]};
    std::sort(domain0.begin(), domain0.end());
    REQUIRE(domain0 == std::vector<int64_t>{1, 2, 2});
    REQUIRE(per_case[{1, 0}] == 5);
    for (int64_t c = 0; c < 5; ++c) REQUIRE(per_case[{2, c}] == 1);
  }
  // Unbalanced: every case once.
  const auto plain = epoch_plan(cases, false, 4, 0);
  REQUIRE(plain.size() == 9);
  REQUIRE(std::set<std::pair<int64_t, int64_t>>(plain.begin(), plain.end()).size() == 9);
  REQUIRE(epoch_plan(cases, true, 4, 0) != epoch_plan(cases, true, 4, 1));  // reshuffled per epoch
  REQUIRE_THROWS_WITH(epoch_plan({2, 0}, true, 4, 0), Catch::Contains("at least one"));
}

TEST_CASE("loader: the volume cache respects its byte budget", "[loader]") {
  Context context;
  const std::size_t volume_bytes = kSide * kSide * kSide * (sizeof(float) + sizeof(int32_t));
  SECTION("a budget of two volumes never holds more") {
    auto loads = std::make_shared<std::atomic<int64_t>>(0);
    LoaderOptions o = small_options(2);
    o.cache_bytes = 2 * volume_bytes + 100;
    Loader loader(context, synthetic_source(context, {3, 3}, loads), o);
    take(loader, 12);
    // Workers keep prefetching while we look: a worker may finish a load (a miss the snapshot
    // does not hold) and start the next between two reads. At every instant
    // loads - workers <= misses <= loads, so the snapshot sits between loads read before and after.
    const int64_t loads_before = *loads;
    const CacheStats stats = loader.cache_stats();
    const int64_t loads_after = *loads;
    REQUIRE(stats.peak_bytes <= o.cache_bytes);
    REQUIRE(stats.bytes <= o.cache_bytes);
    REQUIRE(stats.entries <= 2);
    REQUIRE(stats.hits + stats.misses >= 24);
    REQUIRE(stats.misses <= loads_after);
    REQUIRE(loads_before - stats.misses <= o.workers);
  }
  SECTION("a large budget decodes each case once") {
    auto loads = std::make_shared<std::atomic<int64_t>>(0);
    LoaderOptions o = small_options(1);
    o.cache_bytes = 100 * volume_bytes;
    Loader loader(context, synthetic_source(context, {3, 3}, loads), o);
    take(loader, 12);  // 4 epochs of 6 samples
    REQUIRE(*loads == 6);
    const CacheStats stats = loader.cache_stats();
    REQUIRE(stats.entries == 6);
    REQUIRE(stats.bytes == 6 * volume_bytes);
    REQUIRE(stats.misses == 6);
    REQUIRE(stats.hits >= 18);
  }
  SECTION("no budget, no cache") {
    auto loads = std::make_shared<std::atomic<int64_t>>(0);
    Loader loader(context, synthetic_source(context, {3, 3}, loads), small_options(2));
    take(loader, 3);
    REQUIRE(loader.cache_stats().entries == 0);
    REQUIRE(loader.cache_stats().bytes == 0);
  }
}

TEST_CASE("loader: a failing case surfaces as med3d::Error on next()", "[loader]") {
  Context context;
  auto loads = std::make_shared<std::atomic<int64_t>>(0);
  CaseSource source = synthetic_source(context, {2, 2}, loads);
  auto good = source.load;
  source.load = [good](int64_t d, int64_t c) -> std::pair<Tensor, Tensor> {
    if (d == 1 && c == 0) throw std::runtime_error("disk on fire");
    return good(d, c);
  };
  LoaderOptions o = small_options(2);
  Loader loader(context, source, o);
  const auto plan = epoch_plan({2, 2}, true, o.seed, 0);
  int failures = 0;
  for (int64_t i = 0; i < 2; ++i) {
    const bool bad = plan[static_cast<std::size_t>(2 * i)] == std::make_pair<int64_t, int64_t>(1, 0) ||
                     plan[static_cast<std::size_t>(2 * i + 1)] == std::make_pair<int64_t, int64_t>(1, 0);
    if (bad) {
      REQUIRE_THROWS_WITH(loader.next(), Catch::Contains("domain 1, case 0") && Catch::Contains("disk on fire"));
      ++failures;
    } else {
      REQUIRE(loader.next().index == i);  // the loader goes on after a failure
    }
  }
  REQUIRE(failures == 1);
  // A source returning the wrong types is reported too.
  CaseSource wrong = synthetic_source(context, {1}, loads);
  wrong.load = [context](int64_t, int64_t) {
    return std::make_pair(context.zeros({4, 4, 4}, DType::f64), context.zeros({4, 4, 4}, DType::i32));
  };
  LoaderOptions w = small_options(1);
  w.batch_size = 1;
  Loader wrong_loader(context, wrong, w);
  REQUIRE_THROWS_AS(wrong_loader.next(), Error);
  REQUIRE_THROWS_WITH(wrong_loader.next(), Catch::Contains("f32 [D, H, W] image"));
}

TEST_CASE("loader: destruction while workers are busy does not hang", "[loader]") {
  Context context;
  auto loads = std::make_shared<std::atomic<int64_t>>(0);
  CaseSource source = synthetic_source(context, {4, 4}, loads);
  auto fast = source.load;
  source.load = [fast](int64_t d, int64_t c) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return fast(d, c);
  };
  const auto start = std::chrono::steady_clock::now();
  {
    LoaderOptions o = small_options(2);
    o.queue_depth = 3;
    Loader never_read(context, source, o);  // consumer never calls next()
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
  }
  {
    Loader read_once(context, source, small_options(2));
    read_once.next();  // then stops early with batches in flight
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  REQUIRE(seconds < 5.0);
}

TEST_CASE("loader: bad options give clear errors", "[loader]") {
  Context context;
  auto loads = std::make_shared<std::atomic<int64_t>>(0);
  CaseSource source = synthetic_source(context, {1, 1}, loads);
  LoaderOptions o = small_options(0);
  REQUIRE_THROWS_WITH(Loader(context, source, o), Catch::Contains("workers must be at least 1"));
  o = small_options(1);
  o.batch_size = 3;
  REQUIRE_THROWS_WITH(Loader(context, source, o), Catch::Contains("lower batch_size"));
  o = small_options(1);
  o.queue_depth = 0;
  REQUIRE_THROWS_WITH(Loader(context, source, o), Catch::Contains("queue_depth"));
  o = small_options(1);
  o.augment_options.scale_max = 0.5;
  REQUIRE_THROWS_WITH(Loader(context, source, o), Catch::Contains("scale_min <= scale_max"));
  REQUIRE_THROWS_WITH(Loader(context, CaseSource{}, small_options(1)), Catch::Contains("at least one domain"));
}
