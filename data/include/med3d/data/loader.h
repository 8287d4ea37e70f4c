// Loader: a background thread pool that turns cases of a CaseSource into ready training
// batches (load -> crop -> one affine resampling with augmentation -> intensity), prefetching
// up to `queue_depth` batches ahead of the consumer.
//
// Sampling: the sample stream is endless and split into epochs. Epoch e is a shuffled list
// of (domain, case) pairs: with balance_domains every domain appears as often as the largest
// one (smaller domains cycle through reshuffled passes of their cases, Med3D style),
// otherwise every case once. Batches take consecutive samples (batch_size each); an epoch has
// floor(samples / batch_size) batches (the tail is dropped, as drop_last in PyTorch).
//
// Determinism: every random choice of a sample comes from derive_seed(seed, epoch, index in
// epoch) (crop.h), and batches are assembled in sample order through a reorder buffer, so
// the batch sequence depends only on the seed, the options and the source -- NOT on the
// number of workers or thread timing (1 and 2 workers give identical batches), provided
// `load` returns the same volumes for the same case.
//
// Per sample (domain d, case c):
//   (image, label) = cache or source.load(d, c)   image f32 [D, H, W], label i32 [D, H, W]
//   crop_mode med3d_resize: box = med3d_crop_box, resized to `patch` (the Med3D recipe)
//   crop_mode patch:        box = sample_patch_box(patch, foreground_fraction), padded
//   augmentation (augment.h) folded into the same resampling pass when `augment` is set,
//   rotating and scaling about the crop box centre (so the patch keeps showing what was
//   sampled; AugmentOptions::rotate_about_foreground is not used here), translating within
//   max_translation_fraction of the foreground box; gamma and noise on the image after.
//   Outside the volume the image reads image_fill (default: the volume's minimum), labels 0.
// Workers copy each finished sample into its slot of the batch, so next() only hands over.
//
// Batch: image f32 [B, 1, pD, pH, pW], label i32 [B, pD, pH, pW] (the layout of
// cross_entropy / soft_dice_loss), plus each sample's domain, case and seed.
//
// Cache: decoded volumes are kept in an LRU cache while their bytes (image.nbytes() +
// label.nbytes()) total at most cache_bytes; 0 disables it. A volume larger than the budget
// is not cached.
//
// Threads and errors: `workers` std::threads share the work; the destructor stops them
// (a sample being processed finishes first) and joins, also when the consumer stops early.
// An exception while loading or transforming a sample is caught in the worker and rethrown
// on the consumer's next() for that batch as med3d::Error naming the domain, case and
// cause; the loader then goes on with the following batches. Library code never prints.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "med3d/context.h"
#include "med3d/data/augment.h"
#include "med3d/data/crop.h"
#include "med3d/tensor.h"

namespace med3d::data {

// Where cases come from; the trainer plugs a dataset in here. All three functions may be
// called from several worker threads at once, so they must be thread-safe.
struct CaseSource {
  int64_t domains = 0;                            // number of domains (datasets), > 0
  std::function<int64_t(int64_t domain)> cases;   // cases in `domain`, > 0
  // Decodes one case: image f32 [D, H, W] and label i32 [D, H, W] of the same shape.
  std::function<std::pair<Tensor, Tensor>(int64_t domain, int64_t index)> load;
};

enum class CropMode { med3d_resize, patch };

struct LoaderOptions {
  int64_t batch_size = 2;
  Index3 patch{64, 64, 64};  // output extents of every sample
  CropMode crop_mode = CropMode::patch;
  double foreground_fraction = 0.33;  // CropMode::patch: share of foreground-centred patches
  bool augment = true;
  AugmentOptions augment_options;
  bool balance_domains = true;
  int workers = 2;          // background threads, >= 1
  int queue_depth = 4;      // batches prepared ahead of the consumer, >= 1
  std::size_t cache_bytes = 0;  // LRU budget for decoded volumes; 0: no cache
  uint64_t seed = 0;
  // Global index of the first batch to produce (epoch * batches_per_epoch + index): a resumed
  // run starts where it stopped and gets the same batches as an uninterrupted one, because
  // every sample's content depends only on (seed, epoch, position).
  int64_t start_batch = 0;
};

struct Batch {
  Tensor image;  // f32 [B, 1, pD, pH, pW]
  Tensor label;  // i32 [B, pD, pH, pW]
  std::vector<int64_t> domain, case_index;
  std::vector<uint64_t> sample_seed;
  int64_t epoch = 0;
  int64_t index = 0;  // batch index within the epoch
};

struct CacheStats {
  int64_t hits = 0, misses = 0;
  std::size_t bytes = 0;       // currently cached
  std::size_t peak_bytes = 0;  // most ever cached at once
  int64_t entries = 0;
};

// The (domain, case) list of one epoch (see above); exposed for tests and inspection.
std::vector<std::pair<int64_t, int64_t>> epoch_plan(const std::vector<int64_t>& cases_per_domain,
                                                   bool balance_domains, uint64_t seed, int64_t epoch);

class Loader {
 public:
  // Batches are allocated from `context` (a thread-safe allocator).
  Loader(Context context, CaseSource source, LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Blocks until the next batch is ready; rethrows a worker's failure for this batch.
  Batch next();
  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  CacheStats cache_stats() const;

 private:
  struct Slot;
  struct CacheEntry;
  void work();
  std::pair<Tensor, Tensor> make_sample(int64_t domain, int64_t index, uint64_t seed);
  std::pair<Tensor, Tensor> fetch(int64_t domain, int64_t index);
  std::pair<int64_t, int64_t> case_of(int64_t epoch, int64_t position);

  Context context_;
  CaseSource source_;
  LoaderOptions options_;
  std::vector<int64_t> cases_per_domain_;
  int64_t samples_per_epoch_ = 0;
  int64_t batches_per_epoch_ = 0;

  mutable std::mutex mutex_;
  std::condition_variable work_ready_;   // workers wait for room in the queue
  std::condition_variable batch_ready_;  // the consumer waits for its batch
  bool stop_ = false;
  int64_t next_sample_ = 0;    // next global sample to hand to a worker
  int64_t next_batch_ = 0;     // next batch the consumer takes
  std::map<int64_t, std::unique_ptr<Slot>> slots_;  // reorder buffer, by global batch index
  std::map<int64_t, std::vector<std::pair<int64_t, int64_t>>> plans_;  // epoch -> plan

  mutable std::mutex cache_mutex_;
  std::map<std::pair<int64_t, int64_t>, std::unique_ptr<CacheEntry>> cache_;
  uint64_t cache_clock_ = 0;
  CacheStats cache_stats_;

  std::vector<std::thread> threads_;
};

}  // namespace med3d::data
