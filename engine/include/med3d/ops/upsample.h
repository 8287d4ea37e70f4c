// Placeholder: filled by the op group that owns this header.
#pragma once
