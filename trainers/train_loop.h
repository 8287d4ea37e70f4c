// The one training loop behind train_segmentation (train.h) and train_classification
// (classify.h): split, preprocessing, model, optimiser groups, schedule, loader, checkpoints,
// resume, stop and NaN handling are shared; `classification` switches data checks, loss,
// validation metrics and the pictures. Private to trainers/.
#pragma once

#include "med3d/trainers/train.h"

namespace med3d::trainers::internal {

TrainSummary train_task(Context context, const SegTrainOptions& options, const TrainHooks& hooks,
                        bool classification);

}  // namespace med3d::trainers::internal
