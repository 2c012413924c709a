/* cmd_config.c — `cxr-triage config check|schema|doc|defaults`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void config_usage(FILE *fp)
{
    fprintf(
        fp,
        "usage: cxr-triage config check [FILE]   validate FILE (default: the one the node uses)\n"
        "                                        and print the effective configuration\n"
        "       cxr-triage config schema         print the XSD (conf/cxr-triage.xsd)\n"
        "       cxr-triage config doc            print the key table of docs/configuration.md\n"
        "       cxr-triage config defaults       print a configuration holding every default\n");
}

int cmd_config(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        config_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_FATAL : CLI_EXIT_OK;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "check")) {
        if (argc > 3) {
            config_usage(stderr);
            return CLI_EXIT_FATAL;
        }
        struct cxr_conf *conf = cli_load_conf(argc == 3 ? argv[2] : NULL);
        if (!conf)
            return CLI_EXIT_FATAL;
        fprintf(stderr, "configuration OK: %s\n",
                conf->source_path && *conf->source_path ? conf->source_path
                                                        : "(built-in defaults)");
        cxr_conf_print(conf, stdout);
        cxr_conf_free(conf);
        return CLI_EXIT_OK;
    }
    if (!strcmp(sub, "schema")) {
        fputs(cxr_conf_schema_xsd(), stdout);
        return CLI_EXIT_OK;
    }
    if (!strcmp(sub, "doc")) {
        char *md = cxr_conf_doc_markdown();
        if (!md)
            return CLI_EXIT_FATAL;
        fputs(md, stdout);
        free(md);
        return CLI_EXIT_OK;
    }
    if (!strcmp(sub, "defaults")) {
        struct cxr_conf *conf = NULL;
        if (cxr_conf_defaults(&conf) != CXR_OK)
            return CLI_EXIT_FATAL;
        cxr_conf_print(conf, stdout);
        cxr_conf_free(conf);
        return CLI_EXIT_OK;
    }
    cli_error("config", "unknown subcommand '%s'", sub);
    config_usage(stderr);
    return CLI_EXIT_FATAL;
}
