#include "med3d/trainers/metrics_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "med3d/error.h"

namespace med3d::trainers {
namespace {

namespace fs = std::filesystem;

std::string number_text(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char text[64];
  const auto result = std::to_chars(text, text + sizeof text, value);
  return std::string(text, result.ptr);
}

std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\n\r") == std::string::npos) return text;
  std::string quoted = "\"";
  for (const char c : text) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

std::string csv_cell(const MetricValue& value) {
  if (value.is_text()) return csv_field(value.text());
  if (value.is_integer()) return std::to_string(static_cast<int64_t>(value.number()));
  return number_text(value.number());
}

// Fields of one CSV line (RFC 4180 quoting; the header's names hold no line breaks).
std::vector<std::string> parse_csv_line(const std::string& line, const std::string& path) {
  std::vector<std::string> fields(1);
  bool quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') fields.back() += '"', ++i;
      else if (c == '"') quoted = false;
      else fields.back() += c;
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      fields.emplace_back();
    } else if (c != '\r') {
      fields.back() += c;
    }
  }
  MED3D_CHECK(!quoted, "MetricsLog: the header of '", path, "' has an unterminated quote: ", line);
  return fields;
}

// Cuts a last line that has no final newline (a writer killed mid-row).
void drop_partial_last_line(const fs::path& path) {
  std::error_code error;
  if (!fs::exists(path, error)) return;
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.empty() || bytes.back() == '\n') return;
  const std::size_t keep = bytes.rfind('\n') == std::string::npos ? 0 : bytes.rfind('\n') + 1;
  fs::resize_file(path, keep, error);
  MED3D_CHECK(!error, "MetricsLog: cannot cut the partial last line of '", path.string(), "': ",
              error.message());
}

int open_append(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  MED3D_CHECK(fd >= 0, "MetricsLog: cannot open '", path, "' for appending: ",
              std::strerror(errno), "; check that the run folder is writable");
  return fd;
}

void write_all(int fd, const std::string& text, const std::string& path) {
  const char* p = text.data();
  std::size_t left = text.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    MED3D_CHECK(n > 0, "MetricsLog: writing '", path, "' failed: ", std::strerror(errno),
                " (disk full?)");
    p += n;
    left -= static_cast<std::size_t>(n);
  }
}

void check_key(const std::string& key, const char* what) {
  MED3D_CHECK(!key.empty() && key.find_first_of("\n\r") == std::string::npos, "MetricsLog: ",
              what, " names must be non-empty and hold no line break, got '", key, "'");
}

}  // namespace

double MetricValue::number() const {
  if (const auto* i = std::get_if<int64_t>(&value_)) return static_cast<double>(*i);
  if (const auto* d = std::get_if<double>(&value_)) return *d;
  return std::numeric_limits<double>::quiet_NaN();
}

std::string MetricValue::text() const {
  const auto* s = std::get_if<std::string>(&value_);
  return s ? *s : std::string();
}

const MetricValue* MetricsRow::find(const std::string& key) const {
  for (const auto& entry : values)
    if (entry.first == key) return &entry.second;
  return nullptr;
}

MetricsLog::MetricsLog(const std::string& run_dir, std::vector<std::string> columns)
    : run_dir_(run_dir), columns_(std::move(columns)) {
  for (std::size_t i = 0; i < columns_.size(); ++i) {
    check_key(columns_[i], "column");
    for (std::size_t j = 0; j < i; ++j)
      MED3D_CHECK(columns_[i] != columns_[j], "MetricsLog: column '", columns_[i],
                  "' is given twice");
  }
  std::error_code error;
  fs::create_directories(run_dir_, error);
  MED3D_CHECK(!error, "MetricsLog: cannot create the run folder '", run_dir_, "': ",
              error.message());
  drop_partial_last_line(csv_path());
  drop_partial_last_line(jsonl_path());

  std::ifstream existing(csv_path());
  std::string header;
  if (existing && std::getline(existing, header) && !header.empty()) {
    const std::vector<std::string> found = parse_csv_line(header, csv_path());
    if (columns_.empty()) {
      columns_ = found;
    } else {
      std::string given;
      for (const std::string& c : columns_) {
        if (!given.empty()) given += ',';
        given += csv_field(c);
      }
      MED3D_CHECK(found == columns_, "MetricsLog: '", csv_path(), "' has the columns '", header,
                  "' but this run declares '", given,
                  "'; resume with the same columns or start a new run folder");
    }
  }
  csv_fd_ = open_append(csv_path());
  try {
    jsonl_fd_ = open_append(jsonl_path());
  } catch (...) {
    ::close(csv_fd_);
    throw;
  }
}

MetricsLog::~MetricsLog() {
  if (csv_fd_ >= 0) ::close(csv_fd_);
  if (jsonl_fd_ >= 0) ::close(jsonl_fd_);
}

std::string MetricsLog::csv_path() const { return (fs::path(run_dir_) / "metrics.csv").string(); }
std::string MetricsLog::jsonl_path() const {
  return (fs::path(run_dir_) / "metrics.jsonl").string();
}

void MetricsLog::append(const MetricsRow& row) {
  for (std::size_t i = 0; i < row.values.size(); ++i) {
    check_key(row.values[i].first, "metric");
    for (std::size_t j = 0; j < i; ++j)
      MED3D_CHECK(row.values[i].first != row.values[j].first, "MetricsLog::append: key '",
                  row.values[i].first, "' appears twice in one row");
  }
  const bool new_header = ::lseek(csv_fd_, 0, SEEK_END) == 0;
  if (columns_.empty())
    for (const auto& entry : row.values) columns_.push_back(entry.first);
  for (const auto& entry : row.values) {
    bool known = false;
    for (const std::string& column : columns_) known = known || column == entry.first;
    std::string list;
    if (!known)
      for (const std::string& column : columns_) {
        if (!list.empty()) list += ", ";
        list += column;
      }
    MED3D_CHECK(known, "MetricsLog::append: '", entry.first, "' is not a column of ", csv_path(),
                " (columns: ", list, "); declare every column when creating the MetricsLog");
  }

  std::string csv;
  if (new_header) {
    for (std::size_t c = 0; c < columns_.size(); ++c) {
      if (c) csv += ',';
      csv += csv_field(columns_[c]);
    }
    csv += '\n';
  }
  nlohmann::ordered_json json = nlohmann::ordered_json::object();
  for (std::size_t c = 0; c < columns_.size(); ++c) {
    if (c) csv += ',';
    const MetricValue* value = row.find(columns_[c]);
    if (!value) continue;
    csv += csv_cell(*value);
    if (value->is_text()) json[columns_[c]] = value->text();
    else if (value->is_integer()) json[columns_[c]] = static_cast<int64_t>(value->number());
    else if (std::isfinite(value->number())) json[columns_[c]] = value->number();
    else json[columns_[c]] = nullptr;
  }
  csv += '\n';
  std::string line;
  try {
    line = json.dump() + "\n";
  } catch (const nlohmann::json::exception& e) {
    detail::throw_error("MetricsLog::append: metric names and texts must be valid UTF-8: ",
                        e.what());
  }
  write_all(jsonl_fd_, line, jsonl_path());
  write_all(csv_fd_, csv, csv_path());
}

std::vector<MetricsRow> read_metrics_jsonl(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MED3D_CHECK(in.good(), "read_metrics_jsonl: cannot open '", path, "': ", std::strerror(errno));
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<MetricsRow> rows;
  std::size_t start = 0;
  for (int64_t number = 1; start < bytes.size(); ++number) {
    const std::size_t end = bytes.find('\n', start);
    const bool last_unterminated = end == std::string::npos;
    const std::string line = bytes.substr(start, last_unterminated ? std::string::npos : end - start);
    start = last_unterminated ? bytes.size() : end + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    // ordered_json keeps the keys in file order.
    nlohmann::ordered_json json = nlohmann::ordered_json::parse(line, nullptr, false);
    if (json.is_discarded() && last_unterminated) break;  // cut off by a killed writer
    MED3D_CHECK(!json.is_discarded() && json.is_object(), "read_metrics_jsonl: line ", number,
                " of '", path, "' is not a JSON object: ", line.substr(0, 200));
    MetricsRow row;
    for (auto it = json.begin(); it != json.end(); ++it) {
      const nlohmann::ordered_json& v = it.value();
      if (v.is_number_integer()) row.values.emplace_back(it.key(), v.get<int64_t>());
      else if (v.is_number()) row.values.emplace_back(it.key(), v.get<double>());
      else if (v.is_string()) row.values.emplace_back(it.key(), v.get<std::string>());
      else if (v.is_null())
        row.values.emplace_back(it.key(), std::numeric_limits<double>::quiet_NaN());
      else
        detail::throw_error("read_metrics_jsonl: line ", number, " of '", path, "': '", it.key(),
                            "' is ", v.type_name(), "; expected a number, string or null");
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

Series metrics_series(const std::vector<MetricsRow>& rows, const std::string& x_key,
                      const std::string& y_key, const std::string& name) {
  Series series;
  series.name = name.empty() ? y_key : name;
  for (const MetricsRow& row : rows) {
    const MetricValue* x = row.find(x_key);
    const MetricValue* y = row.find(y_key);
    if (!x || !y || !x->is_number() || !y->is_number() || !std::isfinite(x->number())) continue;
    while (!series.x.empty() && series.x.back() >= x->number()) {
      series.x.pop_back();
      series.y.pop_back();
    }
    series.x.push_back(x->number());
    series.y.push_back(y->number());
  }
  return series;
}

}  // namespace med3d::trainers
