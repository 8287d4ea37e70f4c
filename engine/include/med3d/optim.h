// Placeholder: optimisers and schedules.
#pragma once
