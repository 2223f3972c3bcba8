// pybind11 entry point of edgetune._native. Kernels live in their own files.
#include <pybind11/pybind11.h>

namespace py = pybind11;

int edgetune_num_threads();

PYBIND11_MODULE(_native, m) {
    m.doc() = "edgetune sparse training kernels (private; use edgetune.runtime)";
    m.def("num_threads", &edgetune_num_threads, "Threads the kernels use.");
}
