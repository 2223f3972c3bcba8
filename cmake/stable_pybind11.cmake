# pip builds in an isolated environment whose pybind11 lives in a new temporary folder
# (/tmp/pip-build-env-XXXX) every time. Its include path is part of every compile command, and
# ninja rebuilds an object whose command changed: so each `pip install ".[extra]"` recompiled and
# re-linked (LTO) the whole extension although nothing had changed. Compile against a copy of the
# headers in the build folder instead (scikit-build-core's build-dir, kept between builds), written
# only where its content changed, so that unchanged headers keep their time stamps and the
# objects are reused; a different pybind11 still changes the copies and rebuilds what includes them.
set(EDGETUNE_PYBIND11_INCLUDE "${CMAKE_BINARY_DIR}/pybind11-include")
file(GLOB_RECURSE _et_pybind11_headers RELATIVE "${pybind11_INCLUDE_DIR}" "${pybind11_INCLUDE_DIR}/*")
foreach(_et_header IN LISTS _et_pybind11_headers)
  if(CMAKE_VERSION VERSION_GREATER_EQUAL 3.21)
    get_filename_component(_et_dir "${EDGETUNE_PYBIND11_INCLUDE}/${_et_header}" DIRECTORY)
    file(MAKE_DIRECTORY "${_et_dir}")
    file(COPY_FILE "${pybind11_INCLUDE_DIR}/${_et_header}" "${EDGETUNE_PYBIND11_INCLUDE}/${_et_header}"
         ONLY_IF_DIFFERENT)
  else()
    configure_file("${pybind11_INCLUDE_DIR}/${_et_header}" "${EDGETUNE_PYBIND11_INCLUDE}/${_et_header}" COPYONLY)
  endif()
endforeach()
get_filename_component(_et_real "${pybind11_INCLUDE_DIR}" REALPATH)
foreach(_et_target IN ITEMS pybind11::pybind11_headers pybind11::headers)
  if(TARGET ${_et_target})
    get_target_property(_et_dirs ${_et_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(_et_dirs)
      set(_et_stable_dirs "")
      foreach(_et_dir IN LISTS _et_dirs)
        get_filename_component(_et_dir_real "${_et_dir}" REALPATH)
        if(_et_dir_real STREQUAL _et_real)
          set(_et_dir "${EDGETUNE_PYBIND11_INCLUDE}")
        endif()
        list(APPEND _et_stable_dirs "${_et_dir}")
      endforeach()
      set_target_properties(${_et_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_et_stable_dirs}")
    endif()
  endif()
endforeach()
