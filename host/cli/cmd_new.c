/* cmd_new.c: `losskit new`, an out-of-tree plugin project from a template. */
#include "cli.h"

int cmd_new(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    cli_error("new: not available in this build");
    return EXIT_USAGE;
}
