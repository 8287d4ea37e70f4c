#include "med3d/data/loader.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <limits>
#include <string>

namespace med3d::data {

struct Loader::Slot {
  Batch batch;
  int64_t remaining = 0;  // samples not yet written
  std::string error;      // first failure among its samples
};

struct Loader::CacheEntry {
  std::pair<Tensor, Tensor> volumes;
  std::size_t bytes = 0;
  uint64_t last_used = 0;
};

std::vector<std::pair<int64_t, int64_t>> epoch_plan(const std::vector<int64_t>& cases_per_domain,
                                                   bool balance_domains, uint64_t seed, int64_t epoch) {
  MED3D_CHECK(!cases_per_domain.empty(), "epoch_plan: need at least one domain");
  int64_t largest = 0;
  for (std::size_t d = 0; d < cases_per_domain.size(); ++d) {
    MED3D_CHECK(cases_per_domain[d] > 0, "epoch_plan: domain ", d, " has ", cases_per_domain[d],
                " cases; every domain needs at least one");
    largest = std::max(largest, cases_per_domain[d]);
  }
  // A stream of its own (sample indices never reach 2^64 - 1).
  SampleRng rng(derive_seed(seed, static_cast<uint64_t>(epoch), std::numeric_limits<uint64_t>::max()));
  auto shuffle = [&rng](auto first, auto last) {
    for (auto n = last - first; n > 1; --n) std::swap(first[n - 1], first[rng.integer(n)]);
  };
  std::vector<std::pair<int64_t, int64_t>> plan;
  for (std::size_t d = 0; d < cases_per_domain.size(); ++d) {
    const int64_t count = cases_per_domain[d];
    const int64_t wanted = balance_domains ? largest : count;
    std::vector<int64_t> pass(static_cast<std::size_t>(count));
    for (int64_t taken = 0; taken < wanted;) {
      for (int64_t i = 0; i < count; ++i) pass[static_cast<std::size_t>(i)] = i;
      shuffle(pass.begin(), pass.end());
      for (int64_t i = 0; i < count && taken < wanted; ++i, ++taken)
        plan.emplace_back(static_cast<int64_t>(d), pass[static_cast<std::size_t>(i)]);
    }
  }
  shuffle(plan.begin(), plan.end());
  return plan;
}

Loader::Loader(Context context, CaseSource source, LoaderOptions options)
    : context_(std::move(context)), source_(std::move(source)), options_(std::move(options)) {
  const LoaderOptions& o = options_;
  MED3D_CHECK(source_.domains > 0, "Loader: the CaseSource needs at least one domain, got ",
              source_.domains);
  MED3D_CHECK(source_.cases && source_.load,
              "Loader: the CaseSource needs both `cases` and `load` functions");
  MED3D_CHECK(o.batch_size > 0, "Loader: batch_size must be positive, got ", o.batch_size);
  MED3D_CHECK(o.workers >= 1, "Loader: workers must be at least 1, got ", o.workers);
  MED3D_CHECK(o.queue_depth >= 1, "Loader: queue_depth must be at least 1, got ", o.queue_depth);
  MED3D_CHECK(o.foreground_fraction >= 0 && o.foreground_fraction <= 1,
              "Loader: foreground_fraction must lie in [0, 1], got ", o.foreground_fraction);
  for (int a = 0; a < 3; ++a)
    MED3D_CHECK(o.patch[a] > 0, "Loader: patch extents must be positive, got ", o.patch[a],
                " on axis ", a);
  if (o.augment) {  // validate the options now rather than in every worker
    SampleRng probe(0);
    draw_augment_params(o.augment_options, o.patch, std::nullopt, probe);
  }
  for (int64_t d = 0; d < source_.domains; ++d) cases_per_domain_.push_back(source_.cases(d));
  samples_per_epoch_ = static_cast<int64_t>(epoch_plan(cases_per_domain_, o.balance_domains, o.seed, 0).size());
  batches_per_epoch_ = samples_per_epoch_ / o.batch_size;
  MED3D_CHECK(batches_per_epoch_ > 0, "Loader: an epoch has ", samples_per_epoch_,
              " samples, fewer than batch_size ", o.batch_size, "; lower batch_size");
  MED3D_CHECK(o.start_batch >= 0, "Loader: start_batch must be >= 0, got ", o.start_batch);
  next_batch_ = o.start_batch;
  next_sample_ = o.start_batch * o.batch_size;
  try {
    for (int i = 0; i < o.workers; ++i) threads_.emplace_back([this] { work(); });
  } catch (...) {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    work_ready_.notify_all();
    for (std::thread& t : threads_) t.join();
    throw;
  }
}

Loader::~Loader() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  work_ready_.notify_all();
  batch_ready_.notify_all();
  for (std::thread& t : threads_) t.join();
}

std::pair<int64_t, int64_t> Loader::case_of(int64_t epoch, int64_t position) {
  auto it = plans_.find(epoch);
  if (it == plans_.end())
    it = plans_.emplace(epoch, epoch_plan(cases_per_domain_, options_.balance_domains, options_.seed, epoch)).first;
  return it->second[static_cast<std::size_t>(position)];
}

void Loader::work() {
  const int64_t b = options_.batch_size;
  for (;;) {
    int64_t sample = 0, epoch = 0, position = 0;
    Slot* slot = nullptr;
    std::pair<int64_t, int64_t> which;
    {
      std::unique_lock lock(mutex_);
      work_ready_.wait(lock, [&] {
        return stop_ || next_sample_ < (next_batch_ + options_.queue_depth) * b;
      });
      if (stop_) return;
      sample = next_sample_++;
      const int64_t batch = sample / b;
      epoch = batch / batches_per_epoch_;
      position = (batch % batches_per_epoch_) * b + sample % b;
      std::unique_ptr<Slot>& s = slots_[batch];
      if (!s) {
        s = std::make_unique<Slot>();
        s->remaining = b;
        s->batch.epoch = epoch;
        s->batch.index = batch % batches_per_epoch_;
        s->batch.domain.assign(static_cast<std::size_t>(b), 0);
        s->batch.case_index.assign(static_cast<std::size_t>(b), 0);
        s->batch.sample_seed.assign(static_cast<std::size_t>(b), 0);
        // Workers write their samples straight into the batch, so next() only hands it over.
        // A failed allocation leaves the tensors undefined; writing the sample then fails
        // below and is reported like any other failure, instead of ending the thread.
        try {
          const Index3& p = options_.patch;
          s->batch.image = context_.empty({b, 1, p[0], p[1], p[2]}, DType::f32);
          s->batch.label = context_.empty({b, p[0], p[1], p[2]}, DType::i32);
        } catch (const std::exception&) {
          s->batch.image = s->batch.label = Tensor();
        }
      }
      slot = s.get();
      which = case_of(epoch, position);
    }
    const auto k = static_cast<std::size_t>(sample % b);
    const uint64_t seed = derive_seed(options_.seed, static_cast<uint64_t>(epoch), static_cast<uint64_t>(position));
    slot->batch.domain[k] = which.first;  // each worker writes only its own element k
    slot->batch.case_index[k] = which.second;
    slot->batch.sample_seed[k] = seed;
    bool failed = false;
    std::string error;
    try {
      const auto [image, label] = make_sample(which.first, which.second, seed);
      const std::size_t voxels = static_cast<std::size_t>(image.numel());
      std::memcpy(slot->batch.image.data<float>() + k * voxels, image.data<float>(), voxels * sizeof(float));
      std::memcpy(slot->batch.label.data<int32_t>() + k * voxels, label.data<int32_t>(), voxels * sizeof(int32_t));
    } catch (const std::exception& e) {
      failed = true;
      error = e.what();
    } catch (...) {
      failed = true;
      error = "unknown exception";
    }
    std::lock_guard lock(mutex_);
    if (failed && slot->error.empty())
      slot->error = "Loader: sample " + std::to_string(position) + " of epoch " + std::to_string(epoch) +
                    " (domain " + std::to_string(which.first) + ", case " + std::to_string(which.second) +
                    ") failed: " + error;
    if (--slot->remaining == 0) batch_ready_.notify_all();
  }
}

std::pair<Tensor, Tensor> Loader::fetch(int64_t domain, int64_t index) {
  const auto key = std::make_pair(domain, index);
  if (options_.cache_bytes > 0) {
    std::lock_guard lock(cache_mutex_);
    auto it = cache_.find(key);
    if (it != cache_.end()) {
      ++cache_stats_.hits;
      it->second->last_used = ++cache_clock_;
      return it->second->volumes;
    }
  }
  std::pair<Tensor, Tensor> volumes = source_.load(domain, index);
  const auto& [image, label] = volumes;
  MED3D_CHECK(image.defined() && image.rank() == 3 && image.dtype() == DType::f32,
              "CaseSource::load must return an f32 [D, H, W] image, got ",
              image.defined() ? image.str() : std::string("undefined"));
  MED3D_CHECK(label.defined() && label.dtype() == DType::i32 && label.shape() == image.shape(),
              "CaseSource::load must return an i32 label of the image's shape ", image.shape().str(),
              ", got ", label.defined() ? label.str() : std::string("undefined"));
  std::lock_guard lock(cache_mutex_);
  ++cache_stats_.misses;
  const std::size_t bytes = image.nbytes() + label.nbytes();
  if (options_.cache_bytes == 0 || bytes > options_.cache_bytes || cache_.count(key) > 0) return volumes;
  while (cache_stats_.bytes + bytes > options_.cache_bytes) {
    auto oldest = std::min_element(cache_.begin(), cache_.end(), [](const auto& a, const auto& b) {
      return a.second->last_used < b.second->last_used;
    });
    cache_stats_.bytes -= oldest->second->bytes;
    cache_.erase(oldest);
  }
  auto entry = std::make_unique<CacheEntry>();
  entry->volumes = volumes;
  entry->bytes = bytes;
  entry->last_used = ++cache_clock_;
  cache_.emplace(key, std::move(entry));
  cache_stats_.bytes += bytes;
  cache_stats_.peak_bytes = std::max(cache_stats_.peak_bytes, cache_stats_.bytes);
  return volumes;
}

std::pair<Tensor, Tensor> Loader::make_sample(int64_t domain, int64_t index, uint64_t seed) {
  const LoaderOptions& o = options_;
  auto [image, label] = fetch(domain, index);
  const Index3 n = volume_shape(image, "Loader");
  const std::optional<Box3> foreground = foreground_box(label);
  SampleRng rng(seed);
  const Box3 box = o.crop_mode == CropMode::med3d_resize
                       ? med3d_crop_box(n, foreground, rng)
                       : sample_patch_box(label, o.patch, o.foreground_fraction, rng);
  const Affine3 base = box_map(box, o.patch);
  const double fill = o.augment_options.image_fill ? *o.augment_options.image_fill : image_minimum(image);
  if (!o.augment) return resample(image, label, base, o.patch, fill);
  AugmentParams params = draw_augment_params(o.augment_options, n, foreground, rng);
  // Rotate about the crop's centre, so the patch keeps showing what was sampled.
  for (int a = 0; a < 3; ++a) params.centre[a] = 0.5 * static_cast<double>(box.lo[a] + box.hi[a] - 1);
  auto sample = resample(image, label, augment_map(params, o.patch, base), o.patch, fill);
  apply_intensity(sample.first, params, splitmix64(seed ^ 0x6E6F697365ull));
  return sample;
}

Batch Loader::next() {
  std::unique_ptr<Slot> slot;
  {
    std::unique_lock lock(mutex_);
    batch_ready_.wait(lock, [&] {
      auto it = slots_.find(next_batch_);
      return it != slots_.end() && it->second->remaining == 0;
    });
    auto it = slots_.find(next_batch_);
    slot = std::move(it->second);
    slots_.erase(it);
    ++next_batch_;
    // Plans of finished epochs are no longer needed (workers are at most queue_depth ahead).
    const int64_t epoch = next_batch_ / batches_per_epoch_;
    while (!plans_.empty() && plans_.begin()->first < epoch) plans_.erase(plans_.begin());
  }
  work_ready_.notify_all();
  if (!slot->error.empty()) throw Error(slot->error);
  return std::move(slot->batch);
}

CacheStats Loader::cache_stats() const {
  std::lock_guard lock(cache_mutex_);
  CacheStats stats = cache_stats_;
  stats.entries = static_cast<int64_t>(cache_.size());
  return stats;
}

}  // namespace med3d::data
