/* cmd_check.c: `losskit check`, a conformance report on a plugin. */
#include "cli.h"

int cmd_check(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    cli_error("check: not available in this build");
    return EXIT_USAGE;
}
