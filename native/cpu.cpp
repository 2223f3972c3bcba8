// Cache sizes at run time (see cpu.hpp).
#include "cpu.hpp"

#include <cstdlib>
#include <fstream>
#include <string>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace et {

namespace {

// "32K", "1024K", "8M" or a plain byte count -> bytes (0 if unreadable)
long parse_size(const std::string& s) {
    if (s.empty()) return 0;
    char* end = nullptr;
    long v = std::strtol(s.c_str(), &end, 10);
    if (end && (*end == 'K' || *end == 'k')) v *= 1024;
    else if (end && (*end == 'M' || *end == 'm')) v *= 1024 * 1024;
    return v > 0 ? v : 0;
}

std::string read_line(const std::string& path) {
    std::ifstream f(path);
    std::string s;
    if (f) std::getline(f, s);
    return s;
}

// level 1 data or level 2 (unified) cache size from sysfs
long sysfs_cache(int level, bool data) {
    for (int i = 0; i < 8; i++) {
        const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/";
        const std::string lv = read_line(dir + "level"), type = read_line(dir + "type");
        if (lv.empty()) break;
        if (std::atoi(lv.c_str()) != level) continue;
        if (data ? (type == "Data" || type == "Unified") : (type == "Unified" || type == "Data"))
            return parse_size(read_line(dir + "size"));
    }
    return 0;
}

CacheSizes probe() {
    CacheSizes c;
    long l1 = 0, l2 = 0, line = 0;
#if defined(_SC_LEVEL1_DCACHE_SIZE)
    l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE);
#endif
#if defined(_SC_LEVEL2_CACHE_SIZE)
    l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
#if defined(_SC_LEVEL1_DCACHE_LINESIZE)
    line = sysconf(_SC_LEVEL1_DCACHE_LINESIZE);
#endif
    if (l1 <= 0) l1 = sysfs_cache(1, true);
    if (l2 <= 0) l2 = sysfs_cache(2, false);
    if (line <= 0) line = parse_size(read_line("/sys/devices/system/cpu/cpu0/cache/index0/coherency_line_size"));
    // a value outside what real CPUs have is a misreport (VMs sometimes give 0 or garbage)
    if (l1 >= 8 * 1024 && l1 <= 1024 * 1024) { c.l1d = int(l1); c.measured = true; }
    if (l2 >= 64 * 1024 && l2 <= 64 * 1024 * 1024) c.l2 = int(l2);
    if (line >= 16 && line <= 512) c.line = int(line);
    if (const char* e = std::getenv("EDGETUNE_L1D_BYTES")) {
        const long v = parse_size(e);
        if (v >= 4096) c.l1d = int(v);
    }
    return c;
}

}  // namespace

const CacheSizes& cache_sizes() {
    static const CacheSizes c = probe();
    return c;
}

}  // namespace et
