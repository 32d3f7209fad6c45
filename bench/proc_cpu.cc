#include "bench/proc_cpu.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

namespace aichat::bench {
namespace {

struct Stat {
  int ppid = 0;
  double own = 0;     // utime + stime
  double reaped = 0;  // cutime + cstime
};

// /proc/PID/stat: the command may hold spaces; fields after ") " are positional.
bool ReadStat(int pid, Stat* out) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return false;
  auto close = line.rfind(") ");
  if (close == std::string::npos) return false;
  std::istringstream rest(line.substr(close + 2));
  std::vector<std::string> f;
  std::string w;
  while (rest >> w && f.size() < 16) f.push_back(w);
  if (f.size() < 15) return false;  // f[0] is field 3 (state)
  static const double kTick = static_cast<double>(sysconf(_SC_CLK_TCK));
  out->ppid = std::atoi(f[1].c_str());
  out->own = (std::atof(f[11].c_str()) + std::atof(f[12].c_str())) / kTick;
  out->reaped = (std::atof(f[13].c_str()) + std::atof(f[14].c_str())) / kTick;
  return true;
}

std::map<int, Stat> AllProcesses() {
  std::map<int, Stat> all;
  DIR* d = opendir("/proc");
  if (d == nullptr) return all;
  while (dirent* e = readdir(d)) {
    int pid = std::atoi(e->d_name);
    Stat s;
    if (pid > 0 && ReadStat(pid, &s)) all[pid] = s;
  }
  closedir(d);
  return all;
}

}  // namespace

std::vector<CpuTarget> ParseCpuTargets(const std::string& spec) {
  std::vector<CpuTarget> out;
  std::istringstream in(spec);
  std::string item;
  while (std::getline(in, item, ',')) {
    auto colon = item.find(':');
    if (colon == std::string::npos) continue;
    CpuTarget t;
    t.name = item.substr(0, colon);
    std::string pid = item.substr(colon + 1);
    t.tree = !pid.empty() && pid.back() == '+';
    if (t.tree) pid.pop_back();
    t.pid = std::atoi(pid.c_str());
    if (t.pid > 0) out.push_back(t);
  }
  return out;
}

std::vector<double> SampleCpuSeconds(const std::vector<CpuTarget>& targets) {
  std::map<int, Stat> all = AllProcesses();
  std::vector<double> out;
  for (const auto& t : targets) {
    auto root = all.find(t.pid);
    if (root == all.end()) {
      out.push_back(0);
      continue;
    }
    double sum = root->second.own;
    if (t.tree) {
      sum += root->second.reaped;
      // Descendants: a process whose chain of parents reaches the root.
      for (const auto& [pid, s] : all) {
        int p = s.ppid;
        for (int depth = 0; p > 1 && depth < 16; ++depth) {
          if (p == t.pid) {
            sum += s.own + s.reaped;
            break;
          }
          auto up = all.find(p);
          if (up == all.end()) break;
          p = up->second.ppid;
        }
      }
    }
    out.push_back(sum);
  }
  rusage self{};
  getrusage(RUSAGE_SELF, &self);
  out.push_back(self.ru_utime.tv_sec + self.ru_utime.tv_usec / 1e6 + self.ru_stime.tv_sec +
                self.ru_stime.tv_usec / 1e6);
  return out;
}

}  // namespace aichat::bench
