# Kernel tests, included by tests/CMakeLists.txt (include(kernels_tests.cmake)).
#   kernels              every kernel of every ISA this CPU runs, against double references
#   kernels_env_<isa>    the free functions with TESSERA_ISA=<isa> (the override path)
#   kernels_isa_symbols  the ODR-trap check: no weak symbol shared by two ISA objects
#   kernels_onednn       the same suite with every gemm() through oneDNN (TESSERA_GEMM=onednn)
# One executable, one test file per kernel family (tests/kernels/), sharing helper headers there.
set(_kernel_tests_dir ${CMAKE_CURRENT_LIST_DIR}/kernels)
add_executable(test_kernels
  ${_kernel_tests_dir}/test_main.cpp
  ${_kernel_tests_dir}/test_dispatch.cpp
  ${_kernel_tests_dir}/test_gemm.cpp
  ${_kernel_tests_dir}/test_attention.cpp
  ${_kernel_tests_dir}/test_rows.cpp
  ${_kernel_tests_dir}/test_math.cpp
  ${_kernel_tests_dir}/test_threads.cpp
  ${_kernel_tests_dir}/test_rnn.cpp
  ${_kernel_tests_dir}/test_lowp.cpp)
target_link_libraries(test_kernels PRIVATE tessera_kernels doctest::doctest)
add_test(NAME kernels COMMAND test_kernels)

foreach(_isa generic avx2)
  add_test(NAME kernels_env_${_isa} COMMAND test_kernels --test-suite=active_isa)
  set_tests_properties(kernels_env_${_isa} PROPERTIES ENVIRONMENT "TESSERA_ISA=${_isa}")
endforeach()

add_test(NAME kernels_isa_symbols
         COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/check_isa_symbols.sh ${CMAKE_NM}
                 $<TARGET_OBJECTS:tessera_kernels_isa>)

if(TESSERA_DNNL_LIBRARY AND TESSERA_DNNL_INCLUDE_DIR)
  add_test(NAME kernels_onednn COMMAND test_kernels)
  set_tests_properties(kernels_onednn PROPERTIES ENVIRONMENT "TESSERA_GEMM=onednn")
endif()
