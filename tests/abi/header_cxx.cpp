// Compiled by test_abi.c once per public header, with LK_HEADER naming it:
// a public header must compile alone as C++ too, since an application or a
// plugin may be written in C++ (extern "C", no C-only syntax). It is
// included twice to prove its include guard.
#include LK_HEADER
#include LK_HEADER

typedef int lk__header_check_cxx;
