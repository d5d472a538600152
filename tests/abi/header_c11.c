/* Compiled by test_abi.c once per public header, with LK_HEADER naming it
 * (-DLK_HEADER='<losskit/plugin.h>'): a public header must compile alone,
 * warning-free under -Wpedantic, whatever the includer has included before.
 * It is included twice to prove its include guard. */
#include LK_HEADER
#include LK_HEADER

/* Keeps the translation unit non-empty, which ISO C requires, whatever the
 * header declares. */
typedef int lk__header_check_c;
