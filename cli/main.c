/* main.c — the cxr-triage command: dispatch to subcommands. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cxr/dicom.h"
#include "cxr/log.h"
#include "cxr/nn.h"
#include "cxr/version.h"

struct subcommand {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct subcommand subcommands[] = {
    {"score", cmd_score, "score DICOM files and write one SR per analysed image"},
    {"model", cmd_model, "model init|info: create or inspect a model file"},
    {"config", cmd_config, "config check|schema|doc|defaults: validate or print the configuration"},
    {"serve", cmd_serve, "run the DICOM node: receive, score, send SRs, serve the worklist"},
    {"queue", cmd_queue, "queue list|retry|drop: the node's SR deliveries and dead letters"},
    {"train", cmd_train, "train a model from labeled images (folders, archives, manifests)"},
    {"evaluate", cmd_evaluate, "measure a model on labeled images, with confidence intervals"},
    {"version", cmd_version, "version, backends and codecs built in"},
};

static void usage(FILE *fp)
{
    fprintf(fp, "usage: cxr-triage <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        fprintf(fp, "  %-8s %s\n", subcommands[i].name, subcommands[i].summary);
    fprintf(fp, "\n'cxr-triage <command> --help' describes each command. Docs: docs/.\n");
}

void cli_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "cxr-triage %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

bool cli_parse_age_range(const char *s, double *min_years, double *max_years)
{
    if (!strcmp(s, "none")) {
        *min_years = *max_years = NAN;
        return true;
    }
    char *end = NULL;
    double lo = strtod(s, &end);
    if (end == s)
        return false;
    double hi = lo;
    if (*end == '-') {
        const char *q = end + 1;
        hi = strtod(q, &end);
        if (end == q)
            return false;
    }
    if (*end || !(lo >= 0 && hi <= 150 && lo <= hi))
        return false;
    *min_years = lo;
    *max_years = hi;
    return true;
}

struct cxr_conf *cli_load_conf(const char *explicit_path)
{
    char err[CXR_ERRLEN] = "";
    struct cxr_conf *conf = NULL;
    const char *path = explicit_path;
    char candidate[4200];
    if (!path)
        path = getenv("CXR_TRIAGE_CONFIG");
    if (!path) {
        char exe[4000];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n > 0) {
            exe[n] = '\0';
            char *slash = strrchr(exe, '/');
            if (slash)
                *slash = '\0';
            snprintf(candidate, sizeof candidate, "%s/../conf/cxr-triage.xml", exe);
            if (access(candidate, R_OK) == 0)
                path = candidate;
        }
    }
    if (!path && access("/etc/cxr-triage/cxr-triage.xml", R_OK) == 0)
        path = "/etc/cxr-triage/cxr-triage.xml";
    enum cxr_status st = path ? cxr_conf_load(path, &conf, err) : cxr_conf_defaults(&conf);
    if (st != CXR_OK) {
        fprintf(stderr, "cxr-triage: configuration: %s\n", err[0] ? err : cxr_status_str(st));
        return NULL;
    }
    cxr_conf_log_apply(conf);
    return conf;
}

int cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    cxr_dicom_global_init();
    printf("%s %s\n", CXR_PRODUCT, CXR_VERSION);
    printf("backends: %s\n", cxr_nn_backends_built());
    printf("dicom: DCMTK %s; codecs: %s\n", cxr_dicom_dcmtk_version(), cxr_dicom_codecs_built());
    return CLI_EXIT_OK;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_FATAL;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    if (!strcmp(cmd, "--version"))
        return cmd_version(0, NULL);
    for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
        if (!strcmp(cmd, subcommands[i].name))
            return subcommands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "cxr-triage: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return CLI_EXIT_FATAL;
}
