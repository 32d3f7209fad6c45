// CPU time of processes from /proc, for the load driver's per-process CPU per call:
// a process alone, or a process with every descendant (PostgreSQL: the postmaster,
// its backends, and what exited backends used, which the postmaster reaped).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace aichat::bench {

struct CpuTarget {
  std::string name;
  int pid = 0;
  bool tree = false;  // include descendants and reaped children
};

// "name:pid" or "name:pid+" (the tree), comma-separated.
std::vector<CpuTarget> ParseCpuTargets(const std::string& spec);

// CPU seconds (user + system) used so far by each target, in order; the driver's
// own process is the last entry.
std::vector<double> SampleCpuSeconds(const std::vector<CpuTarget>& targets);

}  // namespace aichat::bench
