// Cache sizes of the CPU the kernels run on, read once at run time: the tiled kernels size
// their tap/channel groups (the weight panel a pass keeps hot) and pixel chunks from them.
#pragma once

namespace et {

struct CacheSizes {
    int l1d = 32 * 1024;    // bytes of level-1 data cache per core
    int l2 = 1024 * 1024;   // bytes of level-2 cache per core
    int line = 64;          // cache line bytes
    bool measured = false;  // false: the fallbacks above (nothing could be read)
};

// sysconf(_SC_LEVEL1_DCACHE_SIZE, ...) where the C library answers, else
// /sys/devices/system/cpu/cpu0/cache/index*/ (Linux, also on arm64), else the fallbacks.
// EDGETUNE_L1D_BYTES overrides the L1d size (for experiments and tests).
const CacheSizes& cache_sizes();

}  // namespace et
