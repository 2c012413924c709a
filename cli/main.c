/* main.c — the cxr-triage command (placeholder until the subcommands land). */
#include <stdio.h>
#include "cxr/version.h"
int main(int argc, char **argv)
{
    (void)argc; (void)argv;
    printf("%s %s\n", CXR_PRODUCT, CXR_VERSION);
    return 0;
}
