/* cli.h — shared helpers of the cxr-triage command's subcommands. The
 * command only parses arguments and dispatches; the work is in the modules. */
#ifndef CXR_CLI_H
#define CXR_CLI_H

#include <stdbool.h>

#include "cxr/conf.h"

/* Exit statuses of every subcommand. */
enum {
    CLI_EXIT_OK = 0,      /* everything done */
    CLI_EXIT_PARTIAL = 1, /* some inputs not analysed */
    CLI_EXIT_FATAL = 2    /* usage or fatal error */
};

/* Finds and loads the configuration: an explicit path, else
 * $CXR_TRIAGE_CONFIG, else <dir of the executable>/../conf/cxr-triage.xml
 * (a source/build tree), else /etc/cxr-triage/cxr-triage.xml, else the
 * built-in defaults. Prints the error and returns NULL on failure. */
struct cxr_conf *cli_load_conf(const char *explicit_path);

/* Prints "cxr-triage <cmd>: <message>" to stderr. */
void cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parses an age range "MIN-MAX" in years (0..150, MIN <= MAX; "5" alone is
 * 5-5, "none" clears it to NaN-NaN). False on anything else. */
bool cli_parse_age_range(const char *s, double *min_years, double *max_years);

int cmd_score(int argc, char **argv);
int cmd_model(int argc, char **argv);
int cmd_config(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_queue(int argc, char **argv);
int cmd_version(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_evaluate(int argc, char **argv);

#endif
