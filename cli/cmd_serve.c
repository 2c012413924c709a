/* cmd_serve.c — `cxr-triage serve`: run the DICOM node (triage/node*.c)
 * until SIGTERM/SIGINT; SIGHUP reloads the configuration and the model. */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cxr/log.h"
#include "cxr/node.h"

static void serve_usage(FILE *fp)
{
    fprintf(fp, "usage: cxr-triage serve [options]\n"
                "  --config FILE        configuration (default: see docs/configuration.md)\n"
                "  --model FILE         model file (default: the configuration's model/path)\n"
                "  --spool DIR          spool folder (default: node/spool-dir)\n"
                "  --port N             DICOM port (default: node/port)\n"
                "  --http-port N        HTTP port (default: http/port; 0 = any free port)\n"
                "  --stable-seconds N   study stability wait (default: node/study-stable-seconds)\n"
                "Receives studies over DICOM, scores them and sends one SR per study to the\n"
                "configured destinations. SIGTERM or SIGINT: finish the work in flight and exit.\n"
                "SIGHUP: reload the configuration and the model (a bad one is refused and the\n"
                "running one keeps serving). See docs/admin-guide.md.\n");
}

struct signal_ctx {
    struct cxr_node *node;
    const char *config_path; /* NULL: the usual search */
    sigset_t set;
    volatile bool done;
};

/* Waits for the node's signals on a thread of its own (they are blocked in
 * every other thread), so that reload and stop run outside signal context. */
static void *signal_main(void *arg)
{
    struct signal_ctx *sc = arg;
    for (;;) {
        int sig = 0;
        if (sigwait(&sc->set, &sig) != 0 || sc->done)
            break;
        if (sig == SIGTERM || sig == SIGINT) {
            cxr_log(CXR_LOG_INFO, "serve", "%s received: stopping",
                    sig == SIGTERM ? "SIGTERM" : "SIGINT");
            cxr_node_stop(sc->node);
        } else if (sig == SIGHUP) {
            cxr_log(CXR_LOG_INFO, "serve",
                    "SIGHUP received: reloading the configuration and the model");
            cxr_node_sd_notify("RELOADING=1");
            struct cxr_conf *conf = cli_load_conf(sc->config_path);
            char err[CXR_ERRLEN] = "";
            cxr_node_reload(sc->node, conf, err); /* NULL: counted as refused */
            cxr_node_sd_notify("READY=1");
        }
    }
    return NULL;
}

static void on_state(void *ctx, const char *state)
{
    (void)ctx;
    cxr_node_sd_notify(state);
}

static bool parse_port(const char *text, bool allow_zero, int32_t *out)
{
    char *end = NULL;
    long v = strtol(text, &end, 10);
    if (!end || *end || v < (allow_zero ? 0 : 1) || v > 65535)
        return false;
    *out = (int32_t)v;
    return true;
}

int cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"model", required_argument, NULL, 'm'},
        {"spool", required_argument, NULL, 's'},
        {"port", required_argument, NULL, 'p'},
        {"http-port", required_argument, NULL, 'H'},
        {"stable-seconds", required_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    struct cxr_node_options opt;
    cxr_node_options_init(&opt);
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config_path = optarg; break;
        case 'm': opt.model_path = optarg; break;
        case 's': opt.spool_dir = optarg; break;
        case 'p':
            if (!parse_port(optarg, false, &opt.port)) {
                cli_error("serve", "--port expects 1..65535, got '%s'", optarg);
                return CLI_EXIT_FATAL;
            }
            break;
        case 'H':
            if (!parse_port(optarg, true, &opt.http_port)) {
                cli_error("serve", "--http-port expects 0..65535, got '%s'", optarg);
                return CLI_EXIT_FATAL;
            }
            break;
        case 'S': {
            char *end = NULL;
            long v = strtol(optarg, &end, 10);
            if (!end || *end || v < 0 || v > 86400) {
                cli_error("serve", "--stable-seconds expects 0..86400, got '%s'", optarg);
                return CLI_EXIT_FATAL;
            }
            opt.study_stable_s = (int32_t)v;
            break;
        }
        case 'h': serve_usage(stdout); return CLI_EXIT_OK;
        default: serve_usage(stderr); return CLI_EXIT_FATAL;
        }
    }
    if (optind < argc) {
        cli_error("serve", "unexpected argument '%s'", argv[optind]);
        serve_usage(stderr);
        return CLI_EXIT_FATAL;
    }

    /* Block the signals in every thread the node will start; one thread waits for them. */
    struct signal_ctx sc = {.config_path = config_path};
    sigemptyset(&sc.set);
    sigaddset(&sc.set, SIGTERM);
    sigaddset(&sc.set, SIGINT);
    sigaddset(&sc.set, SIGHUP);
    sigaddset(&sc.set, SIGUSR1); /* internal: the signal thread's exit */
    pthread_sigmask(SIG_BLOCK, &sc.set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct cxr_conf *conf = cli_load_conf(config_path);
    if (!conf)
        return CLI_EXIT_FATAL;
    char err[CXR_ERRLEN] = "";
    struct cxr_node *node = NULL;
    enum cxr_status st = cxr_node_new(conf, &opt, &node, err);
    if (st != CXR_OK) {
        cli_error("serve", "%s", err[0] ? err : cxr_status_str(st));
        return CLI_EXIT_FATAL;
    }
    cxr_node_set_state_callback(node, on_state, NULL);
    sc.node = node;
    pthread_t sig_thread;
    if (pthread_create(&sig_thread, NULL, signal_main, &sc) != 0) {
        cli_error("serve", "cannot start the signal thread");
        cxr_node_free(node);
        return CLI_EXIT_FATAL;
    }
    st = cxr_node_run(node, err);
    sc.done = true;
    pthread_kill(sig_thread, SIGUSR1);
    pthread_join(sig_thread, NULL);
    cxr_node_free(node);
    if (st != CXR_OK) {
        cli_error("serve", "%s", err[0] ? err : cxr_status_str(st));
        return CLI_EXIT_FATAL;
    }
    return CLI_EXIT_OK;
}
