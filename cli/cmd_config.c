/* cmd_config.c — `cxr-triage config check|schema|doc|defaults`. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cxr/node.h"

static void config_usage(FILE *fp)
{
    fprintf(
        fp,
        "usage: cxr-triage config check [FILE]   validate FILE (default: the one the node uses),\n"
        "                                        open what serve opens at start (the model, the\n"
        "                                        spool, sr/output-dir, TLS files; paths relative\n"
        "                                        to FILE's folder) and print the effective\n"
        "                                        configuration; exit 2 when serve would not start\n"
        "       cxr-triage config check --plugin [FILE]\n"
        "                                        the same for the Orthanc plugin: the model and\n"
        "                                        plugin/state-dir (not the node's spool or TLS)\n"
        "       cxr-triage config schema         print the XSD (conf/cxr-triage.xsd)\n"
        "       cxr-triage config doc            print the key table of docs/configuration.md\n"
        "       cxr-triage config defaults       print a configuration holding every default\n");
}

/* One line per item cxr_node_check tried; ctx counts the failures. */
static void print_item(void *ctx, bool ok, const char *item, const char *detail)
{
    if (!ok)
        ++*(int *)ctx;
    fprintf(stderr, "  %-5s %s: %s\n", ok ? "ok" : "FAIL", item, detail);
}

int cmd_config(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        config_usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_FATAL : CLI_EXIT_OK;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "check")) {
        bool plugin = argc >= 3 && !strcmp(argv[2], "--plugin");
        int first_file = plugin ? 3 : 2;
        if (argc > first_file + 1) {
            config_usage(stderr);
            return CLI_EXIT_FATAL;
        }
        struct cxr_conf *conf = cli_load_conf(argc == first_file + 1 ? argv[first_file] : NULL);
        if (!conf)
            return CLI_EXIT_FATAL;
        const char *name =
            conf->source_path && *conf->source_path ? conf->source_path : "(built-in defaults)";
        /* What serve (or the plugin) opens at start, opened the way it does. */
        int problems = 0;
        enum cxr_status st = plugin ? cxr_node_check_plugin(conf, print_item, &problems)
                                    : cxr_node_check(conf, NULL, print_item, &problems);
        if (st != CXR_OK) {
            fprintf(stderr,
                    "configuration NOT OK: %s: %d problem%s above; %s would not start with it\n",
                    name, problems, problems == 1 ? "" : "s",
                    plugin ? "the Orthanc plugin" : "`cxr-triage serve`");
            cxr_conf_free(conf);
            return CLI_EXIT_FATAL;
        }
        fprintf(stderr, "configuration OK: %s\n", name);
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
