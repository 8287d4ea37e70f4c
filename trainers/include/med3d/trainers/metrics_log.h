// Per-run metric logs: MetricsLog(run_dir) appends rows to run_dir/metrics.csv and
// run_dir/metrics.jsonl (one JSON object per line), and read_metrics_jsonl reads them back
// (e.g. to redraw the curves when a run resumes).
//
// Columns: fixed when the log is created, by the `columns` given to the constructor or else
// by the keys of the first row, in that order; metrics.csv's header is written once. A row may
// leave columns out (empty CSV cell, key absent from the JSON line), but a key that is not a
// column is an error (med3d::Error, nothing written): declare every column up front when rows
// differ (e.g. train-only and validation rows). Keys must be non-empty and unique in a row.
// Resume: opening a run_dir whose metrics.csv exists appends to both files; its header gives
// the columns, and `columns`, when given, must equal it. A last line cut off by a killed run
// (no final newline) is removed from both files before appending.
// Durability: each row is one write(2) to each file (no user-space buffer), so a killed
// process keeps every row it appended; the files are not fsync'ed.
// Values: integers, floating numbers (shortest round-trip text) and strings. CSV quotes
// fields holding a comma, quote or newline (RFC 4180); non-finite numbers are "nan", "inf",
// "-inf" in CSV and null in JSON (null reads back as NaN).
#pragma once

#include <concepts>
#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "med3d/trainers/curves.h"

namespace med3d::trainers {

class MetricValue {
 public:
  template <std::integral T>
  MetricValue(T value) : value_(static_cast<int64_t>(value)) {}
  template <std::floating_point T>
  MetricValue(T value) : value_(static_cast<double>(value)) {}
  MetricValue(std::string value) : value_(std::move(value)) {}
  MetricValue(const char* value) : value_(std::string(value)) {}

  bool is_integer() const { return std::holds_alternative<int64_t>(value_); }
  bool is_number() const { return !is_text(); }
  bool is_text() const { return std::holds_alternative<std::string>(value_); }
  // The number (integers converted); NaN for text.
  double number() const;
  // The text; empty for numbers.
  std::string text() const;
  bool operator==(const MetricValue&) const = default;

 private:
  std::variant<int64_t, double, std::string> value_;
};

struct MetricsRow {
  std::vector<std::pair<std::string, MetricValue>> values;
  // The value of `key`, or nullptr when the row has none.
  const MetricValue* find(const std::string& key) const;
};

class MetricsLog {
 public:
  explicit MetricsLog(const std::string& run_dir, std::vector<std::string> columns = {});
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  void append(const MetricsRow& row);
  // Empty until the columns are known (first row of a new log without given columns).
  const std::vector<std::string>& columns() const { return columns_; }
  std::string csv_path() const;
  std::string jsonl_path() const;

 private:
  std::string run_dir_;
  std::vector<std::string> columns_;
  int csv_fd_ = -1;
  int jsonl_fd_ = -1;
};

// Every row of a metrics.jsonl file in order. Blank lines are skipped; a malformed last line
// without a final newline (a killed writer) is ignored; any other malformed line, or a value
// that is not a number, string or null, is an error naming the line.
std::vector<MetricsRow> read_metrics_jsonl(const std::string& path);

// The (x, y) points of the rows that have both keys as numbers, as a curve named `name` (y_key
// when empty). When a resumed run logged an x again, the later rows replace the earlier
// ones from that x on, so the series stays in increasing x.
Series metrics_series(const std::vector<MetricsRow>& rows, const std::string& x_key,
                      const std::string& y_key, const std::string& name = "");

}  // namespace med3d::trainers
