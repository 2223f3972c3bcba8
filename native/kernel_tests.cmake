# C++ kernel test driver (EDGETUNE_KERNEL_TESTS_ONLY=ON): the kernels without Python or
# pybind11, checked against tests/golden/*.etg (written by tests/kernel_goldens.py from the
# dense numpy reference). Cross builds (cmake/aarch64-linux-gnu.cmake) run it through
# CMAKE_CROSSCOMPILING_EMULATOR, which ctest prepends to the command.
#
# It is built for the first level of EDGETUNE_LEVELS: the host CPU's (-march=native) by
# default, NEON when cross-compiling for aarch64, baseline x86-64 with EDGETUNE_NATIVE_ARCH=OFF.
enable_testing()
list(GET EDGETUNE_LEVELS 0 _et_kt_level)
add_executable(et_kernel_tests native/kernel_tests/driver.cpp ${KERNEL_SOURCES})
edgetune_kernel_target(et_kernel_tests ${_et_kt_level})
if(_et_kt_level MATCHES "^(baseline|avx2|avx512|neon)$")  # checked against simd_isa() at run time
  target_compile_definitions(et_kernel_tests PRIVATE ET_EXPECT_ISA="${_et_kt_level}")
endif()
message(STATUS "edgetune kernel test driver: ${_et_kt_level} level")
file(GLOB _et_goldens CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/tests/golden/*.etg")
if(NOT _et_goldens)
  message(FATAL_ERROR "edgetune: no tests/golden/*.etg (python tests/kernel_goldens.py --write makes them)")
endif()
foreach(golden IN LISTS _et_goldens)
  get_filename_component(_et_case "${golden}" NAME_WE)
  add_test(NAME kernel_${_et_case} COMMAND et_kernel_tests "${golden}")
endforeach()
