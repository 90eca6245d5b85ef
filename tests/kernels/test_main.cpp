// The doctest main of test_kernels (tests/kernels/test_*.cpp; see tests/kernels_tests.cmake).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
