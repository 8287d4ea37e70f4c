// Shared pieces of med3d-bench: timing statistics, the machine's measured ceilings, and the
// report (aligned table, CSV, JSON, bar chart PNG) every subcommand prints.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

namespace med3d::bench {

struct Timing {
  double median_s = 0, min_s = 0;
  int runs = 0;
};

// Median and minimum of durations in seconds.
Timing summarize(std::vector<double> seconds);
// Calls fn `warmup` times untimed, then `runs` times timed (wall clock, one call each).
Timing time_runs(const std::function<void()>& fn, int warmup, int runs);
// The same for two functions, their timed runs alternating (a, b, a, b, ...): on a host shared
// with other jobs the load changes within seconds, and runs taken minutes apart compared the
// load as much as the code (one conv's ratio moved from 0.73 to 1.06 between two runs). Each
// timed run follows an untimed run of the same function, so that both are timed with their data
// in cache, as in back-to-back runs (right after the other one, a conv that reads its weights
// from memory measured up to 25% slower, and not by the same factor for both).
// b_over_a is the median over the runs of b's time / a's time in the same pair: a pair's two runs
// see one moment's load, so its ratio is steadier than the ratio of the medians, which mixes
// moments (on the 2-core host rows of identical code moved by up to 25% between bench runs).
struct Alternating {
  Timing a, b;
  double b_over_a = 0;
};
Alternating time_alternating(const std::function<void()>& a, const std::function<void()>& b, int warmup, int runs);

// Options every subcommand takes.
struct CommonOptions {
  int threads = 2;
  int runs = 20, warmup = 3;
  bool quick = false;
  bool csv = false;
  std::string json_path;
  std::string plot_path;
  std::string scale = "small";
  std::vector<std::string> only;  // conv layers / ops to run (all when empty)
};

// Whether `name` is selected by --only (everything when the list is empty).
bool selected(const CommonOptions& options, const std::string& name);
// Throws med3d::Error naming the first name in --only that is not in `known` (the bench's `what`:
// its layers, ops or shapes), and listing those: a misspelt name would otherwise run nothing.
void check_only(const CommonOptions& options, const std::vector<std::string>& known, const char* what);
// The same for a table whose entries have a `name` (conv layers, op cases, GEMM shapes).
template <class Table>
void check_only(const CommonOptions& options, const Table& table, const char* what) {
  std::vector<std::string> known;
  for (const auto& entry : table) known.emplace_back(entry.name);
  check_only(options, known, what);
}

// ns per 64-byte line for one thread to read 256 KiB it has just written (own) and that another
// thread has just written (handoff); 0 with one thread. Their ratio names the host's regime: on
// the Zen 4 VM 1.6-2.2 where the two vCPUs share a last-level cache, 3.7-4.0 and 7-9 in two other
// placements ("slow": every hand-off of data between our threads then costs that much more). The
// regime changes every few seconds to minutes, so the benches record it before and after their
// timing and the conv and ops tables before each row (`handoff_ratio`).
struct HostRegime {
  double own_line_ns = 0, handoff_line_ns = 0;
  // handoff_line_ns / own_line_ns (NaN with one thread: a table prints "-", JSON null).
  double ratio() const;
  // "fast", or "slow" where a hand-off costs more than 3x one's own; "-" with one thread.
  std::string name() const;
};
HostRegime measure_host_regime(int threads, bool quick);
nlohmann::json to_json(const HostRegime& regime);

// This machine's ceilings with the bench's thread count: the FMA peak of a register-resident
// f32 multiply-add loop (-march=native), Eigen's sgemm on 2048^2 (1024^2 with --quick), and
// the bandwidth of a parallel copy of 256 MiB (read + write bytes per second); and the host's
// regime at that moment.
struct Machine {
  double fma_gflops = 0, sgemm_gflops = 0, copy_gbs = 0;
  HostRegime regime;
  int threads = 0;
  std::string cpu, load_before;
};
Machine measure_machine(int threads, bool quick);
nlohmann::json to_json(const Machine& machine);
void print_machine(const Machine& machine);
// "host regime<when> fast: ..." (nothing with one thread).
void print_host_regime(const char* when, const HostRegime& regime);

// "2x1x32x64x64".
std::string join_shape(const std::vector<int64_t>& shape);
// "0.97 0.81 0.60": the 1, 5 and 15 minute load averages (2 cores shared with other jobs).
std::string load_average();
// Peak resident set size of this process so far, in MiB.
double peak_rss_mib();

// A report: named columns, rows of cells (text or numbers). Numbers print with the column's
// precision in the table and CSV and as numbers in JSON (null when not finite: a reference
// that is unavailable).
class Report {
 public:
  struct Column {
    std::string name;
    int precision = -1;  // -1: text column
  };
  explicit Report(std::vector<Column> columns) : columns_(std::move(columns)) {}
  using Cell = std::variant<std::string, double>;
  void add(std::vector<Cell> row) { rows_.push_back(std::move(row)); }
  bool empty() const { return columns_.empty(); }
  void print_table() const;
  void print_csv() const;
  nlohmann::json rows_json() const;
  // Horizontal bars of column `value` per row, labelled by the text columns `labels`, with a
  // dashed line at 1.0 (parity).
  void plot(const std::string& path, const std::string& title, const std::string& value,
            const std::vector<std::string>& labels) const;

 private:
  std::string cell_text(const Cell& cell, int precision) const;
  std::vector<Column> columns_;
  std::vector<std::vector<Cell>> rows_;
};

// Writes the table or CSV to stdout and, when asked, the JSON document and the plot.
void emit(const Report& report, const CommonOptions& options, nlohmann::json document,
          const std::string& plot_title, const std::string& plot_value,
          const std::vector<std::string>& plot_labels);

}  // namespace med3d::bench
