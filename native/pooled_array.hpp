// numpy arrays on recycled storage (common.hpp big_alloc): a fresh multi-MB
// array would page-fault on every training step. Shared by the bindings and ops.
#pragma once
#include <pybind11/numpy.h>

#include <algorithm>
#include <vector>

#include "common.hpp"

namespace et {

template <class T>
pybind11::array_t<T> pooled_array(std::vector<pybind11::ssize_t> shape) {
    size_t n = 1;
    for (auto d : shape) n *= (size_t)std::max<pybind11::ssize_t>(d, 0);
    const size_t bytes = std::max<size_t>(64, (n * sizeof(T) + 63) / 64 * 64);
    auto* blk = new PooledBlock();
    blk->p = big_alloc(bytes, blk->cap);
    pybind11::capsule owner(blk, [](void* q) {
        auto* b = static_cast<PooledBlock*>(q);
        big_free(b->p, b->cap);
        delete b;
    });
    return pybind11::array_t<T>(shape, static_cast<T*>(blk->p), owner);
}

}  // namespace et
