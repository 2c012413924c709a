/* cmd_queue.c — `cxr-triage queue list|retry|drop`: the node's SR
 * deliveries (pending, delivered, dead-lettered) in its job store. Works
 * while the node runs (the store is SQLite in WAL mode; the node picks up a
 * retried delivery within a second). */
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cxr/node.h"
#include "cxr/store.h"

static void queue_usage(FILE *fp)
{
    fprintf(
        fp,
        "usage: cxr-triage queue list  [--dead|--pending|--delivered|--all] [--json] [--limit N]\n"
        "       cxr-triage queue retry (ID... | --all-dead)\n"
        "       cxr-triage queue drop  (ID... | --all-dead)\n"
        "options for all: --config FILE (its node/spool-dir) or --spool DIR\n"
        "  list   SR deliveries, newest first (default: those not delivered), and the\n"
        "         counts of waiting jobs\n"
        "  retry  put dead-lettered (or pending) deliveries back with their attempts reset;\n"
        "         a running node sends them within a second\n"
        "  drop   forget deliveries that are not delivered (the SR stays in the spool)\n");
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void format_time(int64_t ms, char *buf, size_t len)
{
    if (ms <= 0) {
        snprintf(buf, len, "-");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
}

/* Opens the node's job store; prints why not and returns NULL. */
static struct cxr_node_store *open_store(const char *config_path, const char *spool)
{
    char dir[CXR_NODE_PATHLEN], db[CXR_NODE_PATHLEN + 16];
    if (spool) {
        snprintf(dir, sizeof dir, "%s", spool);
    } else {
        struct cxr_conf *conf = cli_load_conf(config_path);
        if (!conf)
            return NULL;
        char *abs = cxr_conf_resolve_path(conf, conf->node.spool_dir);
        snprintf(dir, sizeof dir, "%s", abs ? abs : "");
        free(abs);
        cxr_conf_free(conf);
    }
    cxr_node_store_path(dir, db, sizeof db);
    if (access(db, F_OK) != 0) {
        cli_error("queue",
                  "no job store at %s: has the node run with this spool folder?"
                  " (give --spool DIR or --config FILE)",
                  db);
        return NULL;
    }
    char err[CXR_NODE_STORE_ERRLEN] = "";
    struct cxr_node_store *s = NULL;
    if (cxr_node_store_open_sqlite(db, false, &s, err) != CXR_OK) {
        cli_error("queue", "%s", err);
        return NULL;
    }
    return s;
}

/* The rows of one state, or (state -2) the dead ones then the pending ones. */
static enum cxr_status fetch(struct cxr_node_store *s, int32_t state, size_t limit,
                             struct cxr_node_delivery_row **rows, size_t *n)
{
    if (state != -2)
        return cxr_node_store_deliveries_list(s, state, limit, rows, n);
    struct cxr_node_delivery_row *dead = NULL, *pending = NULL;
    size_t nd = 0, np = 0;
    enum cxr_status st =
        cxr_node_store_deliveries_list(s, CXR_NODE_DELIVERY_DEAD, limit, &dead, &nd);
    if (st == CXR_OK)
        st = cxr_node_store_deliveries_list(s, CXR_NODE_DELIVERY_PENDING, limit, &pending, &np);
    struct cxr_node_delivery_row *all = st == CXR_OK ? malloc((nd + np + 1) * sizeof *all) : NULL;
    if (all) {
        if (nd)
            memcpy(all, dead, nd * sizeof *all);
        if (np)
            memcpy(all + nd, pending, np * sizeof *all);
        *rows = all;
        *n = nd + np;
    } else if (st == CXR_OK) {
        st = CXR_ERR_NOMEM;
    }
    free(dead);
    free(pending);
    return st;
}

static int list(struct cxr_node_store *s, int32_t state, bool json, size_t limit)
{
    struct cxr_node_delivery_row *rows = NULL;
    size_t n = 0;
    struct cxr_node_store_counts c;
    if (cxr_node_store_counts(s, &c) != CXR_OK || fetch(s, state, limit, &rows, &n) != CXR_OK) {
        cli_error("queue", "%s", cxr_node_store_last_error());
        return CLI_EXIT_FATAL;
    }
    if (json) {
        json_object *root = json_object_new_object();
        json_object *counts = json_object_new_object();
        json_object_object_add(counts, "instances_waiting",
                               json_object_new_int64(c.instances_pending));
        json_object_object_add(counts, "studies_awaiting_report",
                               json_object_new_int64(c.studies_unreported));
        json_object_object_add(counts, "deliveries_pending",
                               json_object_new_int64(c.deliveries_pending));
        json_object_object_add(counts, "deliveries_delivered",
                               json_object_new_int64(c.deliveries_delivered));
        json_object_object_add(counts, "deliveries_dead", json_object_new_int64(c.deliveries_dead));
        json_object_object_add(root, "counts", counts);
        json_object *list = json_object_new_array();
        for (size_t i = 0; i < n; i++) {
            const struct cxr_node_delivery_row *r = &rows[i];
            json_object *o = json_object_new_object();
            json_object_object_add(o, "id", json_object_new_int64(r->id));
            json_object_object_add(o, "state",
                                   json_object_new_string(cxr_node_delivery_state_name(r->state)));
            json_object_object_add(o, "destination", json_object_new_string(r->destination));
            json_object_object_add(o, "attempts", json_object_new_int(r->attempts));
            json_object_object_add(o, "next_attempt_ms", json_object_new_int64(r->next_attempt_ms));
            json_object_object_add(o, "updated_ms", json_object_new_int64(r->updated_ms));
            json_object_object_add(o, "study_instance_uid",
                                   json_object_new_string(r->study_instance_uid));
            json_object_object_add(o, "sr_sop_instance_uid",
                                   json_object_new_string(r->sr_sop_instance_uid));
            json_object_object_add(o, "last_error", json_object_new_string(r->last_error));
            json_object_array_add(list, o);
        }
        json_object_object_add(root, "deliveries", list);
        puts(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY));
        json_object_put(root);
        free(rows);
        return CLI_EXIT_OK;
    }
    printf("waiting: %" PRId64 " instance(s) to score, %" PRId64 " study(ies) awaiting their SR\n",
           c.instances_pending, c.studies_unreported);
    printf("deliveries: %" PRId64 " pending, %" PRId64 " delivered, %" PRId64 " dead\n\n",
           c.deliveries_pending, c.deliveries_delivered, c.deliveries_dead);
    printf("%-6s %-9s %-20s %4s  %-19s  %-40s %s\n", "ID", "STATE", "DESTINATION", "TRY",
           "NEXT/LAST", "STUDY", "LAST ERROR");
    size_t shown = 0;
    int64_t now = now_ms();
    for (size_t i = 0; i < n; i++) {
        const struct cxr_node_delivery_row *r = &rows[i];
        char when[32];
        if (r->state == CXR_NODE_DELIVERY_PENDING && r->next_attempt_ms > now)
            format_time(r->next_attempt_ms, when, sizeof when);
        else if (r->state == CXR_NODE_DELIVERY_PENDING)
            snprintf(when, sizeof when, "due now");
        else
            format_time(r->updated_ms, when, sizeof when);
        printf("%-6" PRId64 " %-9s %-20.20s %4d  %-19s  %-40.64s %s\n", r->id,
               cxr_node_delivery_state_name(r->state), r->destination, r->attempts, when,
               r->study_instance_uid, r->last_error);
        shown++;
    }
    if (!shown)
        printf("(none)\n");
    free(rows);
    return CLI_EXIT_OK;
}

/* retry or drop: each ID given, or every dead one. */
static int change(struct cxr_node_store *s, bool retry, bool all_dead, char **ids, int nids)
{
    int64_t total = 0;
    int rc = CLI_EXIT_OK;
    if (all_dead) {
        int64_t k = 0;
        enum cxr_status st = retry ? cxr_node_store_deliveries_retry(s, 0, now_ms(), &k)
                                   : cxr_node_store_deliveries_drop(s, 0, &k);
        if (st != CXR_OK) {
            cli_error("queue", "%s", cxr_node_store_last_error());
            return CLI_EXIT_FATAL;
        }
        total += k;
    }
    for (int i = 0; i < nids; i++) {
        char *end = NULL;
        long long id = strtoll(ids[i], &end, 10);
        if (!end || *end || id <= 0) {
            cli_error("queue", "'%s' is not a delivery ID (see queue list)", ids[i]);
            rc = CLI_EXIT_FATAL;
            continue;
        }
        int64_t k = 0;
        enum cxr_status st = retry ? cxr_node_store_deliveries_retry(s, id, now_ms(), &k)
                                   : cxr_node_store_deliveries_drop(s, id, &k);
        if (st != CXR_OK) {
            cli_error("queue", "%s", cxr_node_store_last_error());
            return CLI_EXIT_FATAL;
        }
        if (k == 0) {
            cli_error("queue", "delivery %lld: no such delivery, or already delivered", id);
            rc = CLI_EXIT_PARTIAL;
        }
        total += k;
    }
    printf("%s %" PRId64 " deliver%s\n", retry ? "queued again:" : "dropped:", total,
           total == 1 ? "y" : "ies");
    return rc;
}

int cmd_queue(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"spool", required_argument, NULL, 's'},
        {"dead", no_argument, NULL, 'd'},
        {"pending", no_argument, NULL, 'p'},
        {"delivered", no_argument, NULL, 'D'},
        {"all", no_argument, NULL, 'a'},
        {"all-dead", no_argument, NULL, 'A'},
        {"json", no_argument, NULL, 'j'},
        {"limit", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    if (argc < 2) {
        queue_usage(stderr);
        return CLI_EXIT_FATAL;
    }
    const char *config_path = NULL, *spool = NULL;
    int32_t state = -2; /* -2: everything not delivered */
    bool json = false, all_dead = false;
    size_t limit = 1000;
    int c;
    optind = 1;
    /* Options may come before or after the subcommand (GNU getopt permutes). */
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config_path = optarg; break;
        case 's': spool = optarg; break;
        case 'd': state = CXR_NODE_DELIVERY_DEAD; break;
        case 'p': state = CXR_NODE_DELIVERY_PENDING; break;
        case 'D': state = CXR_NODE_DELIVERY_DELIVERED; break;
        case 'a': state = -1; break;
        case 'A': all_dead = true; break;
        case 'j': json = true; break;
        case 'l': {
            char *end = NULL;
            long v = strtol(optarg, &end, 10);
            if (!end || *end || v < 1 || v > 100000) {
                cli_error("queue", "--limit expects 1..100000, got '%s'", optarg);
                return CLI_EXIT_FATAL;
            }
            limit = (size_t)v;
            break;
        }
        case 'h': queue_usage(stdout); return CLI_EXIT_OK;
        default: queue_usage(stderr); return CLI_EXIT_FATAL;
        }
    }
    if (optind >= argc) {
        cli_error("queue", "which subcommand: list, retry or drop?");
        queue_usage(stderr);
        return CLI_EXIT_FATAL;
    }
    const char *sub = argv[optind];
    bool is_list = !strcmp(sub, "list"), is_retry = !strcmp(sub, "retry"),
         is_drop = !strcmp(sub, "drop");
    if (!is_list && !is_retry && !is_drop) {
        cli_error("queue", "unknown subcommand '%s'", sub);
        queue_usage(stderr);
        return CLI_EXIT_FATAL;
    }
    char **rest = argv + optind + 1;
    int nrest = argc - optind - 1;
    if (is_list && nrest > 0) {
        cli_error("queue", "list takes no IDs");
        return CLI_EXIT_FATAL;
    }
    if (!is_list && nrest == 0 && !all_dead) {
        cli_error("queue", "%s needs delivery IDs (see queue list) or --all-dead", sub);
        return CLI_EXIT_FATAL;
    }
    struct cxr_node_store *s = open_store(config_path, spool);
    if (!s)
        return CLI_EXIT_FATAL;
    int rc = is_list ? list(s, state, json, limit) : change(s, is_retry, all_dead, rest, nrest);
    cxr_node_store_close(s);
    return rc;
}
