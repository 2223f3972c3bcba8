# Host-CPU tuning with a portable fallback: x86 takes -march=native, aarch64 -mcpu=native.
include(CheckCXXCompilerFlag)
if(EDGETUNE_NATIVE_ARCH)
  check_cxx_compiler_flag("-march=native" HAS_MARCH_NATIVE)
  check_cxx_compiler_flag("-mcpu=native" HAS_MCPU_NATIVE)
  if(HAS_MARCH_NATIVE)
    target_compile_options(_native PRIVATE -march=native)
  elseif(HAS_MCPU_NATIVE)
    target_compile_options(_native PRIVATE -mcpu=native)
  endif()
endif()
target_compile_options(_native PRIVATE -ffp-contract=fast)
# Lets GCC if-convert (and so vectorise) the activation selects: the kernels
# never rely on floating-point exception flags.
check_cxx_compiler_flag("-fno-trapping-math" HAS_NO_TRAPPING_MATH)
if(HAS_NO_TRAPPING_MATH)
  target_compile_options(_native PRIVATE -fno-trapping-math)
endif()
